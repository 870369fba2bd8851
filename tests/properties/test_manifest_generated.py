"""Properties 2 and 37: generated handler manifests are complete and record every hook.

Each example writes a module package with random handlers, policies, capabilities, versions and
hooks, loads it and builds its manifests. Expectations are computed from what was written, not
from the code under test.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import keyword
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.manifest import build_manifests, load_module
from runtime.manifest._record import HandlerManifest, ModuleManifestRecord
from tests.fixtures.manifest_packages import PackageFactory

SHA256 = re.compile(r"sha256:[0-9a-f]{64}")
HANDLER_KEYS = {
    "handler",
    "module",
    "method",
    "path",
    "request",
    "response",
    "hooks",
    "policy",
    "version_fingerprint",
    "dependencies",
    "streaming",
    "content_hash",
}
HOOK_KEYS = {"id", "phase", "level", "mode", "timeout", "retries", "target", "file", "line"}
POLICY_DEFAULTS: dict[str, Any] = {
    "public": False,
    "roles": [],
    "inner_roles": "caller",
    "rate_limit": None,
    "message_rate_limit": None,
    "timeout": 30.0,
    "idempotent": False,
    "retry": {
        "attempts": 3,
        "initial_backoff": 0.05,
        "max_backoff": 1.0,
        "backoff_multiplier": 2.0,
        "per_try_timeout": None,
    },
    "snapshot": False,
}

HOOKS_SOURCE = """
async def audit(lctx):
    return None


def normalise(lctx):
    return None


async def alert(lctx, error):
    return None


def count(lctx):
    return None
"""
HOOK_FUNCTIONS = {"audit": "async", "normalise": "sync", "alert": "async", "count": "sync"}
FUNCTION_NAMES = ["create_user", "get_user", "list_users", "ping", "remove_user"]
REQUESTS = ["CreateUserRequest", "GetUserRequest", "Empty"]
RESPONSES = ["User", "CreateUserRequest", "Address"]


def def_line(function: str) -> int:
    """The oracle for a hook's line: where its ``def`` is written in HOOKS_SOURCE."""
    for number, text in enumerate(HOOKS_SOURCE.splitlines(), start=1):
        if re.match(rf"(async )?def {function}\(", text):
            return number
    raise AssertionError(function)


def pascal(snake: str) -> str:
    return "".join(word.capitalize() for word in snake.split("_"))


@dataclass(frozen=True)
class HandlerDef:
    function: str
    name: str | None
    is_async: bool
    request: str
    response: str
    streaming: str = "unary"

    @property
    def method(self) -> str:
        return self.name or pascal(self.function)

    def source(self) -> str:
        decorator = f"@handler(name={self.name!r})" if self.name else "@handler"
        prefix = "async def" if self.is_async or self.streaming != "unary" else "def"
        request, response = self.request, self.response
        if self.streaming in ("client", "bidi"):
            request = f"AsyncIterator[{request}]"
        if self.streaming in ("server", "bidi"):
            response = f"AsyncIterator[{response}]"
        return f"\n\n{decorator}\n{prefix} {self.function}(req: {request}, lctx, gctx) -> {response}:\n    raise NotImplementedError\n"


module_names = st.from_regex(r"[a-z][a-z0-9]{0,5}(_[a-z0-9]{1,3})?", fullmatch=True).filter(
    lambda n: not keyword.iskeyword(n) and n != "models"
)


@st.composite
def handler_defs(draw: st.DrawFn) -> list[HandlerDef]:
    functions = draw(st.lists(st.sampled_from(FUNCTION_NAMES), min_size=1, max_size=4, unique=True))
    out = []
    for i, function in enumerate(functions):
        renamed = draw(st.booleans()) and draw(st.booleans())
        out.append(
            HandlerDef(
                function=function,
                name=f"Renamed{i}" if renamed else None,
                is_async=draw(st.booleans()),
                request=draw(st.sampled_from(REQUESTS)),
                response=draw(st.sampled_from(RESPONSES)),
                streaming=draw(st.sampled_from(["unary", "unary", "client", "server", "bidi"])),
            )
        )
    return out


policies = st.fixed_dictionaries(
    {},
    optional={
        "public": st.booleans(),
        "roles": st.lists(st.sampled_from(["users:read", "users:write", "admin"]), unique=True),
        "inner_roles": st.sampled_from(["caller", "module"]),
        "rate_limit": st.builds(
            "{}/{}".format,
            st.integers(1, 1000),
            st.sampled_from(["second", "minute", "hour", "day"]),
        ),
        "timeout": st.floats(0.01, 120, allow_nan=False),
        "idempotent": st.booleans(),
        "retry": st.fixed_dictionaries(
            {}, optional={"attempts": st.integers(1, 10), "initial_backoff": st.just(0.01)}
        ),
        "snapshot": st.booleans(),
    },
)


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value)


@dataclass(frozen=True)
class Case:
    module: str
    semver: str
    handlers: list[HandlerDef]
    policies: dict[str, dict[str, Any]]
    dependencies: list[str]
    labels: dict[str, str]
    hooks: list[dict[str, Any]]
    version: str
    warm_pool: int

    def manifest_text(self) -> str:
        lines = [
            "[module]",
            f'name = "{self.module}"',
            f'version = "{self.semver}"',
            f'handlers = "{{pkg}}.{self.module}.handlers"',
            f"warm_pool = {self.warm_pool}",
            "[capabilities]",
            f"modules = {json.dumps(self.dependencies)}",
            "[versions]",
            *(f'"{label}" = "{version}"' for label, version in self.labels.items()),
        ]
        for method, policy in self.policies.items():
            lines.append(f"[methods.{method}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in policy.items()]
        for hook in self.hooks:
            lines.append("[[hooks]]")
            lines += [f"{key} = {toml_value(value)}" for key, value in hook.items()]
        return "\n".join(lines) + "\n"

    def handlers_text(self) -> str:
        head = "from collections.abc import AsyncIterator\nfrom runtime import handler\nfrom {pkg}.models import Address, CreateUserRequest, Empty, GetUserRequest, User\n"
        return head + "".join(h.source() for h in self.handlers)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    handlers = draw(handler_defs())
    methods = [h.method for h in handlers]
    chosen = draw(st.lists(st.sampled_from(methods), unique=True))
    hook_count = draw(st.integers(0, 5))
    hooks = []
    for i in range(hook_count):
        hook: dict[str, Any] = {
            "id": f"hook-{i}",
            "phase": draw(st.sampled_from(["before", "after", "catch"])),
            "target": f"{{pkg}}.MODULE.hooks:{draw(st.sampled_from(sorted(HOOK_FUNCTIONS)))}",
        }
        if draw(st.booleans()):
            hook["method"] = draw(st.sampled_from(methods))
        if draw(st.booleans()):
            hook["timeout"] = draw(st.floats(0.01, 60, allow_nan=False))
        if draw(st.booleans()):
            hook["retries"] = draw(st.integers(0, 10))
        hooks.append(hook)
    module = draw(module_names)
    for hook in hooks:
        hook["target"] = hook["target"].replace("MODULE", module)
    date = draw(st.dates(min_value=datetime.date(2020, 1, 1))).isoformat()
    version = draw(
        st.sampled_from(
            [date, f"tsv:{draw(st.integers(0, 2**32))}-{module}-{draw(st.integers(1, 99))}"]
        )
    )
    return Case(
        module=module,
        semver=f"{draw(st.integers(0, 9))}.{draw(st.integers(0, 20))}.{draw(st.integers(0, 99))}",
        handlers=handlers,
        policies={m: draw(policies) for m in chosen},
        dependencies=draw(
            st.lists(st.sampled_from(["users", "orders", "billing", "mail"]), unique=True)
        ),
        labels=draw(
            st.dictionaries(st.sampled_from(["stable", "latest", "v1.2.0"]), st.just(date))
        ),
        hooks=hooks,
        version=version,
        warm_pool=draw(st.integers(0, 5)),
    )


def build(case: Case) -> tuple[ModuleManifestRecord, str, str]:
    """Write, load and build the case; returns the record, the package name and the schema fingerprint."""
    with tempfile.TemporaryDirectory() as tmp, PackageFactory(Path(tmp)) as packages:
        pkg = packages.make(
            {
                f"{case.module}/module.toml": case.manifest_text(),
                f"{case.module}/handlers.py": case.handlers_text(),
                f"{case.module}/hooks.py": HOOKS_SOURCE,
            }
        )
        loaded = load_module(Path(tmp) / pkg / case.module)
        return build_manifests(loaded, version=case.version), pkg, loaded.schema.fingerprint()


def expected_policy(declared: dict[str, Any]) -> dict[str, Any]:
    policy = {**POLICY_DEFAULTS, **{k: v for k, v in declared.items() if k != "retry"}}
    policy["retry"] = {**POLICY_DEFAULTS["retry"], **declared.get("retry", {})}
    return policy


def recomputed_hash(data: dict[str, Any]) -> str:
    content = {k: v for k, v in data.items() if k != "content_hash"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@settings(max_examples=100, deadline=None)
@given(case=cases())
def test_every_generated_manifest_is_complete(case: Case) -> None:
    """Property 2: A generated manifest is complete (section 2)."""
    record, _pkg, schema_fingerprint = build(case)
    assert (record.name, record.semver, record.version, record.warm_pool) == (
        case.module,
        case.semver,
        case.version,
        case.warm_pool,
    )
    assert dict(record.labels) == case.labels
    assert record.schema_fingerprint == schema_fingerprint and SHA256.fullmatch(schema_fingerprint)
    assert sorted(m.method for m in record.handlers) == sorted(h.method for h in case.handlers)
    for definition in case.handlers:
        manifest = record.handler(definition.method)
        data = manifest.to_json()
        assert set(data) == HANDLER_KEYS
        assert data["handler"] == f"{case.module}.{definition.method}"
        assert data["path"] == f"/{case.module}.v1.{pascal(case.module)}Service/{definition.method}"
        assert data["streaming"] == definition.streaming
        assert data["request"]["name"] == definition.request
        assert data["response"]["name"] == definition.response
        assert SHA256.fullmatch(data["request"]["fingerprint"]) and SHA256.fullmatch(
            data["response"]["fingerprint"]
        )
        assert data["policy"] == expected_policy(case.policies.get(definition.method, {}))
        assert data["version_fingerprint"] == schema_fingerprint
        assert data["dependencies"] == sorted(case.dependencies)
        assert data["content_hash"] == recomputed_hash(data)
        assert HandlerManifest.from_json(json.loads(manifest.canonical_json())) == manifest
    assert ModuleManifestRecord.from_json(json.loads(record.canonical_json())) == record


@settings(max_examples=100, deadline=None)
@given(case=cases())
def test_every_declared_hook_is_recorded_in_the_manifest(case: Case) -> None:
    """Property 37: Hooks are recorded in the manifest."""
    record, pkg, _ = build(case)
    for definition in case.handlers:
        recorded = [h.to_json() for h in record.handler(definition.method).hooks]
        applicable = [h for h in case.hooks if "method" not in h] + [
            h for h in case.hooks if h.get("method") == definition.method
        ]
        assert [h["id"] for h in recorded] == [h["id"] for h in applicable]
        for got, declared in zip(recorded, applicable, strict=True):
            function = declared["target"].rpartition(":")[2]
            assert set(got) == HOOK_KEYS
            assert got["phase"] == declared["phase"]
            assert got["level"] == ("handler" if "method" in declared else "module")
            assert got["mode"] == HOOK_FUNCTIONS[function]
            assert got["timeout"] == declared.get("timeout", 5.0)
            assert got["retries"] == declared.get("retries", 0)
            assert got["target"] == declared["target"].replace("{pkg}", pkg)
            assert got["file"] == f"{pkg}/{case.module}/hooks.py"
            assert got["line"] == def_line(function)
    declared_ids = {h["id"] for h in case.hooks}
    recorded_ids = {h.id for m in record.handlers for h in m.hooks}
    assert recorded_ids == declared_ids
