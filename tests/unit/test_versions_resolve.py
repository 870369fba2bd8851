"""Timescape resolution of x-api-version, case by case."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from runtime.errors import InternalError, InvalidArgument, NotFound
from runtime.versions._resolve import VersionTable, parse_instant, parse_version_id

JAN = "2025-01-15"
JUN = "2025-06-01"
TSV = "tsv:1750000000-users-1"  # 2025-06-15T15:06:40Z


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.fixture
def table() -> VersionTable:
    return VersionTable(
        "users",
        [(TSV, 1750000000.0), (JAN, ts("2025-01-15")), (JUN, ts("2025-06-01"))],
        labels={"stable": JAN, "v1.2.0": JUN},
    )


def test_a_date_id_is_midnight_utc() -> None:
    parsed = parse_version_id("2025-06-01")
    assert parsed is not None
    assert (parsed.kind, parsed.instant, parsed.seq) == ("date", ts("2025-06-01"), 0)


def test_a_tsv_id_carries_its_seconds_module_and_sequence() -> None:
    parsed = parse_version_id("tsv:1740000000-user_profiles-12")
    assert parsed is not None
    assert (parsed.kind, parsed.instant, parsed.module, parsed.seq) == ("tsv", 1740000000.0, "user_profiles", 12)


@pytest.mark.parametrize("text", ["2025-02-30", "2025-6-01", "tsv:abc-users-1", "tsv:1-users", "stable", ""])
def test_anything_else_is_not_a_version_id(text: str) -> None:
    assert parse_version_id(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1740000000", 1740000000.0),
        ("1740000000.5", 1740000000.5),
        ("2025-03-01T12:00:00Z", ts("2025-03-01T12:00:00")),
        ("2025-03-01T12:00:00+02:00", ts("2025-03-01T10:00:00")),
        ("2025-03-01T12:00:00", ts("2025-03-01T12:00:00")),
        ("2025-03-01", ts("2025-03-01")),
        ("soon", None),
        ("2025-03-01Tnoon", None),
    ],
)
def test_instants_parse_from_iso_timestamps_dates_and_unix_seconds(text: str, expected: float | None) -> None:
    assert parse_instant(text) == expected


def test_no_header_gets_stable(table: VersionTable) -> None:
    assert table.resolve(None) == JAN
    assert table.resolve("") == JAN
    assert table.resolve("   ") == JAN


def test_no_header_without_stable_gets_latest() -> None:
    table = VersionTable("users", [(JAN, 0.0), (JUN, 0.0)])
    assert table.resolve(None) == JUN


def test_latest_is_the_newest_version(table: VersionTable) -> None:
    assert table.resolve("latest") == TSV
    assert table.versions == (JAN, JUN, TSV)


def test_an_explicit_latest_label_is_honoured() -> None:
    table = VersionTable("users", [(JAN, 0.0), (JUN, 0.0)], labels={"latest": JAN})
    assert table.resolve("latest") == JAN


def test_a_label_resolves_to_its_id(table: VersionTable) -> None:
    assert table.resolve("v1.2.0") == JUN
    assert table.resolve("stable") == JAN


def test_an_existing_id_resolves_to_itself(table: VersionTable) -> None:
    assert table.resolve(JUN) == JUN
    assert table.resolve(TSV) == TSV


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("2025-03-01", JAN),
        ("2025-06-14", JUN),
        ("2025-06-01T00:00:00Z", JUN),
        ("2025-05-31T23:59:59Z", JAN),
        ("2025-06-01T01:00:00+02:00", JAN),
        (str(int(ts("2025-06-01"))), JUN),
        (str(int(ts("2025-06-01")) - 1), JAN),
        ("1750000000", TSV),
        ("2099-01-01T00:00:00Z", TSV),
    ],
)
def test_an_instant_resolves_to_the_newest_version_at_or_before_it(
    table: VersionTable, header: str, expected: str
) -> None:
    assert table.resolve(header) == expected


def test_an_instant_before_every_version_is_not_found_naming_module_and_value(table: VersionTable) -> None:
    with pytest.raises(NotFound, match=r"'users'.*'2024-12-31'"):
        table.resolve("2024-12-31")


def test_an_unknown_tsv_id_is_not_found(table: VersionTable) -> None:
    with pytest.raises(NotFound, match="tsv:1750000001-users-1"):
        table.resolve("tsv:1750000001-users-1")


def test_an_unknown_label_is_not_found_and_lists_the_labels(table: VersionTable) -> None:
    with pytest.raises(NotFound, match=r"'v9\.0\.0'.*stable"):
        table.resolve("v9.0.0")


@pytest.mark.parametrize("header", ["2025-13-45", "tsv:abc", "not a version", "-5", "2025-03-01Tnoon", "@stable"])
def test_an_unparsable_value_is_invalid_naming_it_and_the_accepted_forms(table: VersionTable, header: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        table.resolve(header)
    assert repr(header) in caught.value.message
    assert "ISO-8601" in caught.value.message and "tsv:" in caught.value.message


def test_a_huge_value_is_echoed_only_in_part(table: VersionTable) -> None:
    with pytest.raises(InvalidArgument) as caught:
        table.resolve("%" * 10_000)
    assert len(caught.value.message) < 400


def test_a_table_without_versions_finds_nothing() -> None:
    table = VersionTable("users", [])
    for header in (None, "latest", "2025-01-01"):
        with pytest.raises(NotFound, match="'users'"):
            table.resolve(header)


def test_resolutions_are_cached_per_header_and_bounded() -> None:
    table = VersionTable("users", [(JAN, 0.0), (JUN, 0.0)], cache_size=3)
    for header in ("2025-02-01", "2025-07-01", "latest", JAN):
        table.resolve(header)
    assert len(table._cache) == 3
    assert "2025-02-01" not in table._cache  # the least recently used went first
    assert table._cache[JAN] == JAN


def test_errors_are_not_cached(table: VersionTable) -> None:
    with pytest.raises(NotFound):
        table.resolve("v9.0.0")
    assert "v9.0.0" not in table._cache


@pytest.mark.parametrize(
    ("versions", "labels"),
    [
        ([("yesterday", 0.0)], {}),
        ([(JAN, 0.0), (JAN, 1.0)], {}),
        ([(JAN, 0.0)], {"stable": JUN}),
    ],
    ids=["bad-id", "duplicate-id", "label-to-unknown-id"],
)
def test_a_malformed_table_is_refused(versions: list[tuple[str, float]], labels: dict[str, str]) -> None:
    with pytest.raises(InternalError):
        VersionTable("users", versions, labels)


def test_created_at_may_be_a_datetime_and_orders_versions_of_one_instant() -> None:
    same_instant = "tsv:1748736000-users-0"  # the same instant and sequence as the date 2025-06-01
    table = VersionTable(
        "users",
        [(same_instant, datetime(2025, 6, 2, tzinfo=UTC)), (JUN, datetime(2025, 6, 1, tzinfo=UTC))],
    )
    assert table.versions == (JUN, same_instant)
    assert table.resolve("2025-06-01T12:00:00Z") == same_instant


def test_a_cache_hit_counts_as_recent_use() -> None:
    table = VersionTable("users", [(JAN, 0.0), (JUN, 0.0)], cache_size=2)
    table.resolve("2025-02-01")
    table.resolve("2025-07-01")
    table.resolve("2025-02-01")  # used again: now the most recent
    table.resolve("latest")
    assert set(table._cache) == {"2025-02-01", "latest"}


def test_non_ascii_digits_are_not_unix_seconds(table: VersionTable) -> None:
    with pytest.raises(InvalidArgument):
        table.resolve("\u0661\u0667\u0665\u0660\u0660\u0660\u0660\u0660\u0660\u0660")
