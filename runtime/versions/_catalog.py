"""A module's versions as serving sees them: schemas, wire descriptors, labels and steps.

A :class:`VersionCatalog` is built once per change (from the files next to a module, or from the
manifest store's records) and then only read on the request path: resolving ``x-api-version``
is a cached lookup and every :class:`~runtime.wire.WireVersion` is built once.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

from runtime.errors import FailedPrecondition, NotFound
from runtime.gtype import Schema
from runtime.versions._chain import MAX_HOPS, TransformStep
from runtime.versions._history import VersionHistory, build_version_files
from runtime.versions._resolve import VersionTable
from runtime.versions._stubs import unfilled_stubs
from runtime.wire import FieldLock, WireVersion, version_segment

__all__ = ["VersionCatalog", "VersionInfo", "decode_descriptor", "encode_descriptor"]


def encode_descriptor(fdp: descriptor_pb2.FileDescriptorProto) -> str:
    """A descriptor as text for a JSON document in the store."""
    return base64.b64encode(fdp.SerializeToString(deterministic=True)).decode("ascii")


def decode_descriptor(text: str) -> descriptor_pb2.FileDescriptorProto:
    return descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(text))


@dataclass(frozen=True)
class VersionInfo:
    """One version of a module, with what serving needs of it."""

    id: str
    created_at: float
    schema: Schema
    descriptor: descriptor_pb2.FileDescriptorProto
    parent: str | None = None
    breaking: bool = False
    transformer_source: str | None = None
    """The source of the step from ``parent`` to this version, when one was written."""
    manifest: Mapping[str, Any] = field(default_factory=dict)
    """The handler manifests of this version (policies per method, hooks, hashes)."""


class VersionCatalog:
    """The versions of one module, oldest first, with labels, wire codecs and transformer steps."""

    def __init__(self, module: str, versions: Sequence[VersionInfo], labels: Mapping[str, str]) -> None:
        if not versions:
            raise NotFound(f"module {module!r} has no recorded versions")
        self.module = module
        self.versions = tuple(sorted(versions, key=lambda v: (v.created_at, v.id)))
        self.by_id = {v.id: v for v in self.versions}
        self.labels = dict(labels)
        self.latest = self.versions[-1]
        self.table = VersionTable(module, [(v.id, v.created_at) for v in self.versions], self.labels)
        self._wires: dict[str, WireVersion] = {}
        self._steps: dict[str, TransformStep | None] = {}

    def resolve(self, header: str | None) -> str:
        """The version id an ``x-api-version`` value selects (SPEC §4); cached."""
        return self.table.resolve(header)

    def wire(self, version_id: str) -> WireVersion:
        wire = self._wires.get(version_id)
        if wire is None:
            info = self.by_id[version_id]
            wire = self._wires[version_id] = WireVersion(info.schema, info.descriptor)
        return wire

    def step_into(self, version_id: str) -> TransformStep | None:
        """The step from a version's parent into it; None when a breaking step has no source."""
        if version_id not in self._steps:
            info = self.by_id[version_id]
            step: TransformStep | None
            if info.parent is None:
                step = None
            elif info.transformer_source is not None:
                methods = [m.name for m in info.schema.methods]
                step = TransformStep.from_source(
                    self.module, info.parent, info.id, info.transformer_source,
                    methods=methods, origin=f"<{self.module} transformers {info.id}>",
                )  # fmt: skip
            elif not info.breaking:
                step = TransformStep(self.module, info.parent, info.id)  # compatible: identity
            else:
                step = None
            self._steps[version_id] = step
        return self._steps[version_id]

    def chain(self, old: str, new: str) -> list[TransformStep] | None:
        """The steps from ``old`` forward to ``new`` (oldest first), or None if none can be built."""
        steps: list[TransformStep] = []
        current = new
        while current != old:
            info = self.by_id.get(current)
            # Another step is needed here; refuse it once MAX_HOPS are already taken, so a
            # chain that run_chain would reject is never offered as a route.
            if info is None or info.parent is None or len(steps) >= MAX_HOPS:
                return None
            step = self.step_into(current)
            if step is None:
                return None
            steps.append(step)
            current = info.parent
        steps.reverse()
        return steps

    def route(self, version_id: str, served: Sequence[str]) -> tuple[str, list[TransformStep]] | None:
        """Where a call at ``version_id`` goes: a served version and the steps to reach it.

        A version that is served itself needs no steps. Otherwise the newest served version a
        chain of transformers reaches wins. None when no served version can be reached.
        """
        if version_id in served:
            return version_id, []
        for target in sorted(served, key=lambda v: self.by_id[v].created_at if v in self.by_id else 0, reverse=True):
            if target not in self.by_id or self.by_id[target].created_at < self.by_id[version_id].created_at:
                continue
            steps = self.chain(version_id, target)
            if steps is not None:
                return target, steps
        return None

    # -- building --------------------------------------------------------------------------------
    @classmethod
    def from_module_dir(cls, module: str, directory: Path, labels: Mapping[str, str]) -> VersionCatalog:
        """From the committed files next to a module: versions/, fields.lock.json, transformers/.

        A transformer still holding a generated stub is refused (FAILED_PRECONDITION naming the
        file and function), so a worker never starts with it.
        """

        history = VersionHistory.load(module, directory / "versions")
        lock = FieldLock.load(directory / "fields.lock.json")
        infos = []
        for record, fdp in build_version_files(history, lock):
            source_path = directory / "transformers" / f"{version_segment(record.id)}.py"
            source = source_path.read_text("utf-8") if source_path.exists() else None
            stubs = unfilled_stubs(source, origin=str(source_path)) if source is not None else []
            if stubs:
                raise FailedPrecondition(
                    f"module {module}: {source_path}: {', '.join(stubs)} "
                    f"{'is' if len(stubs) == 1 else 'are'} still the generated stub; write the "
                    "transformation before serving (old callers would get INTERNAL)"
                )
            infos.append(
                VersionInfo(
                    id=record.id,
                    created_at=record.created_at,
                    schema=record.schema,
                    descriptor=fdp,
                    parent=record.parent,
                    breaking=record.breaking,
                    transformer_source=source,
                )
            )
        return cls(module, infos, labels)

    @classmethod
    def from_records(cls, module: str, records: Sequence[Any], labels: Mapping[str, str]) -> VersionCatalog:
        """From the manifest store's ``VersionRecord`` objects (the gateway's view)."""
        infos = [
            VersionInfo(
                id=r.id,
                created_at=r.created_at,
                schema=Schema.from_json(r.schema),
                descriptor=decode_descriptor(r.metadata["descriptor"]),
                parent=r.parent,
                breaking=r.breaking,
                transformer_source=r.transformers.get("source"),
                manifest=r.manifest,
            )
            for r in records
        ]
        return cls(module, infos, labels)
