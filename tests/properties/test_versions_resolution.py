"""Property 33: version resolution, against a brute-force oracle over random version sets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.errors import InvalidArgument, NotFound
from runtime.versions._resolve import VersionTable

START = datetime(2025, 1, 1, tzinfo=UTC)
SPAN_DAYS = 120  # versions and queries share a window, so most queries land between versions
LABEL_NAMES = ["stable", "v1.0.0", "v2.1.3", "beta", "latest"]


@dataclass(frozen=True)
class Version:
    id: str
    instant: float
    seq: int
    created_at: float


@st.composite
def versions(draw: st.DrawFn) -> list[Version]:
    result: dict[str, Version] = {}
    for _ in range(draw(st.integers(min_value=0, max_value=15))):
        created_at = draw(st.floats(min_value=0, max_value=2e9, allow_nan=False))
        if draw(st.booleans()):
            day = START.date() + timedelta(days=draw(st.integers(0, SPAN_DAYS)))
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
            version = Version(day.isoformat(), moment, 0, created_at)
        else:
            seconds = int(START.timestamp()) + draw(st.integers(0, SPAN_DAYS * 86400))
            seq = draw(st.integers(0, 3))
            version = Version(f"tsv:{seconds}-users-{seq}", float(seconds), seq, created_at)
        result.setdefault(version.id, version)
    return list(result.values())


def newest(candidates: list[Version]) -> Version:
    return max(candidates, key=lambda v: (v.instant, v.seq, v.created_at, v.id))


def oracle(table: list[Version], labels: dict[str, str], query: tuple[str, str | None, float | None]) -> str | type:
    """The expected resolution, worked out by scanning every version."""
    kind, text, instant = query
    by_id = {v.id: v for v in table}
    if kind == "none":
        if "stable" in labels:
            return labels["stable"]
        return newest(table).id if table else NotFound
    assert text is not None
    if text in labels:
        return labels[text]
    if text == "latest":
        return newest(table).id if table else NotFound
    if text in by_id:
        return text
    if kind in ("label", "tsv"):
        return NotFound
    if kind == "garbage":
        return InvalidArgument
    assert instant is not None
    before = [v for v in table if v.instant <= instant]
    return newest(before).id if before else NotFound


def queries(table: list[Version]) -> st.SearchStrategy[tuple[str, str | None, float | None]]:
    window = st.datetimes(
        min_value=START.replace(tzinfo=None) - timedelta(days=5),
        max_value=START.replace(tzinfo=None) + timedelta(days=SPAN_DAYS + 5),
        timezones=st.just(UTC),
    )
    days = st.dates(min_value=date(2024, 12, 25), max_value=date(2025, 5, 10))
    options = [
        st.just(("none", None, None)),
        st.sampled_from(LABEL_NAMES).map(lambda name: ("label", name, None)),
        st.from_regex(r"[a-z][a-z0-9.]{0,8}", fullmatch=True).map(lambda name: ("label", name, None)),
        days.map(lambda d: ("date", d.isoformat(), datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp())),
        window.map(lambda m: ("iso", m.strftime("%Y-%m-%dT%H:%M:%SZ"), float(int(m.timestamp())))),
        window.map(lambda m: ("unix", str(int(m.timestamp())), float(int(m.timestamp())))),
        st.builds(
            lambda s, q: ("tsv", f"tsv:{int(START.timestamp()) + s}-users-{q}", None),
            st.integers(0, SPAN_DAYS * 86400),
            st.integers(0, 3),
        ),
        st.sampled_from(["2025-13-01", "tsv:x-users-1", "not a version", "-1", "2025-02-30", "~", "1e9"]).map(
            lambda g: ("garbage", g, None)
        ),
    ]
    if table:
        options.append(st.sampled_from([v.id for v in table]).map(lambda text: ("id", text, None)))
    return st.one_of(options)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), table=versions())
def test_resolution_agrees_with_a_brute_force_oracle(data: st.DataObject, table: list[Version]) -> None:
    """Property 33: Version resolution is correct.

    For random version sets, labels and queries (no header, labels known and unknown, exact ids,
    dates, ISO timestamps, unix seconds, unknown tsv ids, garbage), resolve() returns what a
    linear scan says, or raises NOT_FOUND / INVALID_ARGUMENT exactly when the oracle does;
    asking twice (the cached path) gives the same answer.
    """
    ids = [v.id for v in table]
    labels: dict[str, str] = {}
    if ids:
        for name in data.draw(st.lists(st.sampled_from(LABEL_NAMES), unique=True)):
            labels[name] = data.draw(st.sampled_from(ids))
    resolver = VersionTable("users", [(v.id, v.created_at) for v in table], labels)
    for query in data.draw(st.lists(queries(table), min_size=1, max_size=8)):
        expected = oracle(table, labels, query)
        header = query[1]
        for _ in range(2):
            if isinstance(expected, str):
                assert resolver.resolve(header) == expected, query
            else:
                try:
                    got = resolver.resolve(header)
                except (NotFound, InvalidArgument) as exc:
                    assert type(exc) is expected, (query, exc)
                else:
                    raise AssertionError(f"{query} resolved to {got!r}; expected {expected.__name__}")


@settings(max_examples=100, deadline=None)
@given(table=versions(), text=st.text(max_size=40))
def test_any_header_resolves_to_a_known_version_or_a_precise_error(table: list[Version], text: str) -> None:
    """Property 33: Version resolution is correct (arbitrary headers never crash the resolver)."""
    resolver = VersionTable("users", [(v.id, v.created_at) for v in table])
    try:
        resolved = resolver.resolve(text)
    except (NotFound, InvalidArgument) as exc:
        assert "users" in exc.message or "x-api-version" in exc.message
    else:
        assert resolved in {v.id for v in table}
