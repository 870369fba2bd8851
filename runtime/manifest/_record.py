"""Generated manifests: what the gateway, the store and the audit log know about a handler.

A :class:`HandlerManifest` is derived from a loaded module and never written by hand. It carries
everything needed to route, police and audit one method without importing the module's code,
and a ``content_hash`` over all of it, so an audit record can say exactly which contract ran::

    {"handler": "users.CreateUser", "path": "/users.v1.UsersService/CreateUser",
     "request": {"name": "CreateUserRequest", "fingerprint": "sha256:..."}, ...,
     "content_hash": "sha256:..."}

Everything is serialised as canonical JSON (sorted keys, no whitespace; see
:func:`runtime.gtype.canonical_json`), so equal manifests have equal bytes and equal hashes.
Deserialising recomputes the hash and refuses data whose hash does not match.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from runtime.errors import ManifestError
from runtime.gtype import GType, Schema, canonical_json, fingerprint
from runtime.manifest._loader import LoadedModule, ResolvedHook
from runtime.manifest._names import method_path
from runtime.manifest._toml import Capabilities, MethodPolicy
from runtime.versions import is_version_id

Streaming = Literal["unary", "client", "server", "bidi"]
_STREAMING: tuple[Streaming, ...] = ("unary", "client", "server", "bidi")


def _streaming(value: object) -> Streaming:
    for shape in _STREAMING:
        if value == shape:
            return shape
    raise ValueError(f"streaming must be one of {', '.join(_STREAMING)}, not {value!r}")


__all__ = ["HandlerManifest", "HookRecord", "ModuleManifestRecord", "TypeRef", "build_manifests"]


@dataclass(frozen=True, slots=True)
class TypeRef:
    """A named type of the module's schema and the fingerprint of it and every type it reaches."""

    name: str
    fingerprint: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "fingerprint": self.fingerprint}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TypeRef:
        return cls(name=data["name"], fingerprint=data["fingerprint"])


@dataclass(frozen=True, slots=True)
class HookRecord:
    """A hook as recorded in a manifest: enough to audit it without importing it."""

    id: str
    phase: Literal["before", "after", "catch"]
    level: Literal["module", "handler"]
    mode: Literal["sync", "async"]
    timeout: float
    retries: int
    target: str
    file: str
    """Source file relative to the repository (the import root of the hook's package)."""
    line: int

    @classmethod
    def of(cls, hook: ResolvedHook) -> HookRecord:
        return cls(
            id=hook.id,
            phase=hook.phase,
            level=hook.level,
            mode="async" if hook.is_async else "sync",
            timeout=hook.decl.timeout,
            retries=hook.decl.retries,
            target=hook.decl.target,
            file=hook.file,
            line=hook.line,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "phase": self.phase,
            "level": self.level,
            "mode": self.mode,
            "timeout": self.timeout,
            "retries": self.retries,
            "target": self.target,
            "file": self.file,
            "line": self.line,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HookRecord:
        return cls(
            id=data["id"],
            phase=data["phase"],
            level=data["level"],
            mode=data["mode"],
            timeout=float(data["timeout"]),
            retries=int(data["retries"]),
            target=data["target"],
            file=data["file"],
            line=int(data["line"]),
        )


@dataclass(frozen=True, slots=True)
class HandlerManifest:
    """The generated manifest of one handler at one module version (SPEC §2)."""

    handler: str
    """Handler id ``module.Method``."""
    module: str
    method: str
    path: str
    """Full gRPC method path, ``/users.v1.UsersService/CreateUser``."""
    request: TypeRef
    response: TypeRef
    hooks: tuple[HookRecord, ...]
    """Module-level hooks, then this handler's own, each in declaration order."""
    policy: MethodPolicy
    """The method's policy with every default filled in."""
    version_fingerprint: str
    """Fingerprint of the module's whole schema at this version."""
    dependencies: tuple[str, ...]
    """Modules this handler's module may call (``capabilities.modules``), sorted."""
    streaming: Streaming = "unary"
    """The call's shape: ``unary``, or which side streams (``client``, ``server``, ``bidi``)."""
    content_hash: str = field(init=False)
    """``sha256:<hex>`` of the canonical JSON of every other field."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "content_hash", fingerprint(self._content()))

    def _content(self) -> dict[str, Any]:
        return {
            "handler": self.handler,
            "module": self.module,
            "method": self.method,
            "path": self.path,
            "request": self.request.to_json(),
            "response": self.response.to_json(),
            "hooks": [h.to_json() for h in self.hooks],
            "policy": self.policy.model_dump(mode="json"),
            "version_fingerprint": self.version_fingerprint,
            "dependencies": list(self.dependencies),
            "streaming": self.streaming,
        }

    def to_json(self) -> dict[str, Any]:
        return {**self._content(), "content_hash": self.content_hash}

    def canonical_json(self) -> str:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HandlerManifest:
        """Rebuild a manifest; ManifestError when its content does not match its hash."""
        try:
            made = cls(
                handler=data["handler"],
                module=data["module"],
                method=data["method"],
                path=data["path"],
                request=TypeRef.from_json(data["request"]),
                response=TypeRef.from_json(data["response"]),
                hooks=tuple(HookRecord.from_json(h) for h in data["hooks"]),
                policy=MethodPolicy.model_validate(data["policy"]),
                version_fingerprint=data["version_fingerprint"],
                dependencies=tuple(data["dependencies"]),
                streaming=_streaming(data.get("streaming", "unary")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(
                f"handler manifest {data.get('handler')!r} is malformed: {exc!r}"
            ) from exc
        _check_hash(
            f"handler manifest {made.handler!r}", data.get("content_hash"), made.content_hash
        )
        return made


@dataclass(frozen=True, slots=True)
class ModuleManifestRecord:
    """Every handler manifest of one module version, with the module-level facts."""

    name: str
    semver: str
    version: str
    """The version id (``2025-06-01`` or ``tsv:...``)."""
    description: str
    labels: tuple[tuple[str, str], ...]
    """``[versions]`` of the manifest: label -> version id, sorted by label."""
    capabilities: Capabilities
    warm_pool: int
    schema_fingerprint: str
    handlers: tuple[HandlerManifest, ...]
    """Sorted by method name."""
    content_hash: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "content_hash", fingerprint(self._content()))

    def handler(self, method: str) -> HandlerManifest:
        """The manifest of ``method``; KeyError names the module and method when there is none."""
        for manifest in self.handlers:
            if manifest.method == method:
                return manifest
        raise KeyError(f"module {self.name!r} at version {self.version!r} has no method {method!r}")

    def _content(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "semver": self.semver,
            "version": self.version,
            "description": self.description,
            "labels": dict(self.labels),
            "capabilities": self.capabilities.model_dump(mode="json"),
            "warm_pool": self.warm_pool,
            "schema_fingerprint": self.schema_fingerprint,
            "handlers": [h.to_json() for h in self.handlers],
        }

    def to_json(self) -> dict[str, Any]:
        return {**self._content(), "content_hash": self.content_hash}

    def canonical_json(self) -> str:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModuleManifestRecord:
        """Rebuild a record; ManifestError when any content does not match its hash."""
        try:
            made = cls(
                name=data["name"],
                semver=data["semver"],
                version=data["version"],
                description=data["description"],
                labels=tuple(sorted(data["labels"].items())),
                capabilities=Capabilities.model_validate(data["capabilities"]),
                warm_pool=int(data["warm_pool"]),
                schema_fingerprint=data["schema_fingerprint"],
                handlers=tuple(HandlerManifest.from_json(h) for h in data["handlers"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ManifestError(
                f"module manifest {data.get('name')!r} is malformed: {exc!r}"
            ) from exc
        _check_hash(f"module manifest {made.name!r}", data.get("content_hash"), made.content_hash)
        return made


def build_manifests(loaded: LoadedModule, *, version: str) -> ModuleManifestRecord:
    """The generated manifests of ``loaded`` as version ``version`` (a version id)."""
    if not is_version_id(version):
        raise ManifestError(
            f"{loaded.manifest_path}: {version!r} is not a version id "
            "(a date such as 2025-06-01, or tsv:<seconds>-<module>-<seq>)"
        )
    manifest = loaded.manifest
    schema = loaded.schema
    schema_fingerprint = schema.fingerprint()
    dependencies = tuple(sorted(manifest.capabilities.modules))
    handlers = []
    for spec in sorted(loaded.handlers, key=lambda s: s.method):
        handlers.append(
            HandlerManifest(
                handler=spec.handler_id,
                module=loaded.name,
                method=spec.method,
                path=method_path(loaded.name, spec.method),
                request=type_ref(schema, spec.types.request),
                response=type_ref(schema, spec.types.response),
                hooks=tuple(HookRecord.of(h) for h in loaded.hooks_for(spec.method)),
                policy=loaded.policy(spec.method),
                version_fingerprint=schema_fingerprint,
                dependencies=dependencies,
                streaming=_streaming(schema.method(spec.method).streaming),
            )
        )
    return ModuleManifestRecord(
        name=loaded.name,
        semver=manifest.module.version,
        version=version,
        description=manifest.module.description,
        labels=tuple(sorted(manifest.versions.items())),
        capabilities=manifest.capabilities,
        warm_pool=manifest.module.warm_pool,
        schema_fingerprint=schema_fingerprint,
        handlers=tuple(handlers),
    )


def type_ref(schema: Schema, node: GType) -> TypeRef:
    """A reference to ``node`` whose fingerprint covers it and every named type it reaches.

    A request type that embeds an ``Address`` changes fingerprint when ``Address`` changes.
    """
    reached: dict[str, GType] = {}
    pending = [node]
    while pending:
        current = pending.pop()
        if current.kind == "ref":
            if current.name in reached:
                continue
            current = schema.type(current.name)
            reached[current.name] = current
        pending.extend(f.type for f in current.fields)
        pending.extend(current.variants)
        pending.extend(n for n in (current.items, current.keys) if n is not None)
    root = node.name if node.kind == "ref" else canonical_json(node)
    closure = [reached[name].to_json() for name in sorted(reached)]
    return TypeRef(
        name=node.name or node.kind, fingerprint=fingerprint({"root": root, "types": closure})
    )


def _check_hash(what: str, stored: object, computed: str) -> None:
    if stored != computed:
        raise ManifestError(
            f"{what}: content hash {stored!r} does not match its content ({computed})"
        )
