"""The public surface of runtime.lcc, request ids, flags and RequestMeta checks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import runtime.lcc as lcc
from runtime.deadline import Deadline
from runtime.identity import Principal, is_valid_request_id, new_request_id
from runtime.lcc import RequestMeta, parse_flags

LCC_DIR = Path(lcc.__file__).parent



def test_private_modules_are_underscored() -> None:
    assert all(p.name.startswith("_") for p in LCC_DIR.glob("*.py"))


def test_lcc_imports_no_grpc_gateway_worker_or_backend() -> None:
    forbidden = ("grpc", "asyncpg", "nats", "redis", "sqlite3")
    forbidden_runtime = ("gateway", "worker", "store", "fabric", "client", "secrets")
    for path in LCC_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                parts = name.split(".")
                assert parts[0] not in forbidden, f"{path.name} imports {name}"
                if parts[0] == "runtime" and len(parts) > 1:
                    assert parts[1] not in forbidden_runtime, f"{path.name} imports {name}"


def test_new_request_ids_are_valid_and_unique() -> None:
    ids = {new_request_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(is_valid_request_id(i) for i in ids)


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("a", True),
        ("req-1.2:3_x", True),
        ("A" * 128, True),
        ("A" * 129, False),
        ("", False),
        ("has space", False),
        ("new\nline", False),
        ("trailing\n", False),
        ("é", False),
        ("quote'", False),
        (None, False),
        (123, False),
    ],
)
def test_is_valid_request_id_accepts_only_the_narrow_alphabet(value: object, valid: bool) -> None:
    assert is_valid_request_id(value) is valid


def test_parse_flags_splits_trims_and_lowercases() -> None:
    assert parse_flags(None) == frozenset()
    assert parse_flags("") == frozenset()
    assert parse_flags("Snapshot, debug ,,trace") == {"snapshot", "debug", "trace"}
    assert parse_flags(["snapshot", "Debug trace"]) == {"snapshot", "debug", "trace"}


def _meta(**changes: object) -> RequestMeta:
    fields: dict[str, object] = {
        "request_id": "r-1",
        "handler": "users.GetUser",
        "method": "/users.v1.Users/GetUser",
        "version": "2025-06-01",
    }
    fields.update(changes)
    return RequestMeta(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"request_id": "bad id"}, "request id"),
        ({"handler": "GetUser"}, "module.Method"),
        ({"handler": ".GetUser"}, "module.Method"),
        ({"method": "users.v1.Users/GetUser"}, "gRPC path"),
        ({"method": "/GetUser"}, "gRPC path"),
        ({"version": ""}, "version"),
    ],
)
def test_request_meta_refuses_incomplete_fields(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _meta(**changes)


def test_request_meta_refuses_flags_that_are_not_a_frozenset() -> None:
    with pytest.raises(TypeError, match="frozenset"):
        _meta(flags={"snapshot"})


def test_request_meta_json_keeps_every_field_and_the_deadline_budget() -> None:
    now = [100.0]
    meta = _meta(
        flags=frozenset({"snapshot", "debug"}),
        deadline=Deadline.after(1.5, lambda: now[0]),
        principal=Principal("alice", ("admin",), "jwt"),
    )
    data = meta.to_json()
    assert data == {
        "request_id": "r-1",
        "handler": "users.GetUser",
        "method": "/users.v1.Users/GetUser",
        "version": "2025-06-01",
        "flags": ["debug", "snapshot"],
        "deadline_ms": 1500,
        "principal": {"subject": "alice", "roles": ["admin"], "method": "jwt"},
    }
    later = [5000.0]
    back = RequestMeta.from_json(data, clock=lambda: later[0])
    assert back.deadline is not None and back.deadline.remaining() == pytest.approx(1.5)
    assert back.to_json() == data
    assert (back.request_id, back.flags, back.principal) == (
        meta.request_id,
        meta.flags,
        meta.principal,
    )
