"""``modrpc gen``: record versions, then write ``proto/`` and ``gen/`` atomically (or check them).

For each module:

1. Compare the schema of the handler code with the latest recorded version. When it differs,
   record a new version (``modules/<m>/versions/<id>.json``) with its diff; when the diff is
   breaking, also write transformer stubs that fail loudly until someone fills them in.
2. For every recorded version, build the descriptor (field numbers from the committed
   ``fields.lock.json``; fields dropped since earlier versions reserved) and render:
   ``proto/<m>/<version>/<m>/v1/<m>.proto`` and ``gen/<m>/<vseg>/`` (messages, gRPC stubs,
   ``.pyi`` stubs, typed clients). Constraints travel in the ``.proto`` as ``buf.validate``
   rules; each version folder carries upstream's ``validate.proto`` beside its own file, and
   ``gen/buf/validate/`` its Python.

Everything is produced in a temporary tree first. ``--check`` compares that tree with the
committed one and names every stale file; otherwise each module's folders are swapped into
place, so a failure never leaves half-written output behind. Only the modules given are
touched: other modules' generated code stays as it is.
"""

from __future__ import annotations

import datetime as _dt
import filecmp
import os
import re
import shutil
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runtime.codegen._proto import render_proto
from runtime.codegen._pycode import (
    compile_buf_validate,
    compile_python,
    render_client,
    render_version_init,
)
from runtime.codegen._transformers import render_transformer_stub, transformer_path
from runtime.gtype import (
    PROTOVALIDATE_VERSION,
    VALIDATE_PROTO,
    VALIDATE_PROTO_ROOT,
    Schema,
    diff,
    fingerprint,
)
from runtime.versions import (
    RecordedVersion,
    VersionHistory,
    build_version_files,
    unfilled_transformers,
    version_instant,
)
from runtime.wire import FieldLock, WireSchemaError, version_segment

__all__ = ["GenResult", "ModuleSource", "generate"]


@dataclass(frozen=True)
class ModuleSource:
    """What codegen needs to know of one module: where it lives and its current schema."""

    name: str
    directory: Path
    schema: Schema


@dataclass
class GenResult:
    """What a run did (or, with ``check``, what is stale)."""

    recorded: list[str] = field(default_factory=list)
    stubs: list[str] = field(default_factory=list)
    unfilled: list[str] = field(default_factory=list)
    """Transformer stubs written by an earlier run and still not filled in."""
    written: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.stale


def _rel(path: Path, root: Path) -> str:
    """``path`` as messages name it: relative to the project root when it is inside it."""
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _record_version(
    src: ModuleSource, history: VersionHistory, *, date: str, now: float, check: bool, result: GenResult,
    root: Path, out_modules: Path,
) -> None:  # fmt: skip
    current = fingerprint(src.schema)
    latest = history.latest
    if latest is not None and latest.fingerprint == current:
        return
    if check:
        what = "has no recorded version" if latest is None else f"changed since version {latest.id}"
        result.stale.append(f"{_rel(src.directory, root)}: the handler schema {what}; run `modrpc gen`")
        return
    changes = diff(latest.schema, src.schema) if latest is not None else None
    version_id = history.next_id(date, now)
    record = RecordedVersion(
        id=version_id,
        created_at=version_instant(version_id),
        schema=src.schema,
        fingerprint=current,
        parent=latest.id if latest else None,
        breaking=bool(changes and changes.breaking),
        changes=tuple(
            {"path": c.path, "kind": c.kind, "breaking": c.breaking, "detail": c.detail}
            for c in (changes.changes if changes else ())
        ),
    )
    history.records.append(record)
    if latest is None:
        _label_first_version(src, version_id, out_modules, root, result)
    target = out_modules / "versions" / VersionHistory.file_name(version_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(record.dumps(), encoding="utf-8")
    result.recorded.append(f"{src.name} {version_id}" + (" (breaking)" if record.breaking else ""))
    if latest is not None and record.breaking:
        stub = transformer_path(src.directory, latest.id, version_id)
        if not stub.exists():
            staged = out_modules / stub.relative_to(src.directory)
            staged.parent.mkdir(parents=True, exist_ok=True)
            staged.write_text(
                render_transformer_stub(src.name, latest, record), encoding="utf-8"
            )
            result.stubs.append(_rel(stub, root))


_VERSIONS_TABLE = re.compile(r"^\[versions\][ \t]*(#.*)?$", re.MULTILINE)


def _label_first_version(
    src: ModuleSource, version_id: str, out_modules: Path, root: Path, result: GenResult
) -> None:
    """Write ``stable = "<first version>"`` into module.toml unless it places ``stable`` itself.

    Written rather than implied, so the module's label is in the file its author reads, and
    moving it later is an edit there. A manifest whose ``versions`` is an inline table is left
    alone (a line cannot be added to it); gen says so.
    """
    manifest = src.directory / "module.toml"
    if not manifest.is_file():  # a bare schema handed to generate(): there is no label to write
        return
    text = manifest.read_text(encoding="utf-8")
    versions = tomllib.loads(text).get("versions")
    if isinstance(versions, dict) and "stable" in versions:
        return
    line = f'stable = "{version_id}"  # the first version; move it when callers should move'
    table = _VERSIONS_TABLE.search(text)
    if table is not None:
        text = text[: table.end()] + "\n" + line + text[table.end() :]
    elif versions is None:
        text = text.rstrip("\n") + "\n\n[versions]\n" + line + "\n"
    else:
        result.notes.append(f"{_rel(manifest, root)}: versions is an inline table; add stable = \"{version_id}\" to it yourself")
        return
    (out_modules / "module.toml").write_text(text, encoding="utf-8")
    result.notes.append(f"labelled {src.name} {version_id} stable in {_rel(manifest, root)}")


def _render_module(
    src: ModuleSource, history: VersionHistory, lock: FieldLock, out: Path, source_dir: str,
) -> None:  # fmt: skip
    module_gen = out / "gen" / src.name
    module_gen.mkdir(parents=True)
    versions = []
    for record, fdp in build_version_files(history, lock):
        header = f"DO NOT EDIT: generated by modrpc gen from {source_dir}/versions/{VersionHistory.file_name(record.id)}."
        proto_text = render_proto(fdp, header=header)
        version_dir = out / "proto" / src.name / record.id.replace(":", "_")
        proto_file = version_dir / fdp.name
        proto_file.parent.mkdir(parents=True, exist_ok=True)
        proto_file.write_text(proto_text, encoding="utf-8")
        if VALIDATE_PROTO in fdp.dependency:
            # Each version folder stays self-contained (protoc -I, buf lint, buf breaking):
            # upstream's validate.proto, unchanged, beside the file that imports it.
            vendored = version_dir / VALIDATE_PROTO
            vendored.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(VALIDATE_PROTO_ROOT / VALIDATE_PROTO, vendored)
        seg = version_segment(record.id)
        package = f"gen.{src.name}.{seg}"
        pkg_dir = module_gen / seg
        pkg_dir.mkdir()
        for name, text in compile_python(fdp, proto_text, package=package, header=header).items():
            (pkg_dir / name).write_text(text, encoding="utf-8")
        (pkg_dir / "__init__.py").write_text(
            render_version_init(module=src.name, version=record.id, header=header), encoding="utf-8"
        )
        (pkg_dir / "client.py").write_text(
            render_client(fdp, module=src.name, version=record.id, package=package, header=header),
            encoding="utf-8",
        )
        versions.append(record.id)
    init_header = f"DO NOT EDIT: generated by modrpc gen from {source_dir}."
    listed = ", ".join(f'"{v}"' for v in versions)
    (module_gen / "__init__.py").write_text(
        f'# {init_header}\n"""Generated code for the {src.name} module, one package per API version."""\n\n'
        f"VERSIONS: tuple[str, ...] = ({listed},)\n"
        f'LATEST = "{versions[-1]}"\n',
        encoding="utf-8",
    )


def _write_buf_validate(gen: Path) -> None:
    """``gen/buf/validate/``: the Python of the ``buf.validate`` rules generated messages use."""
    header = (
        f"DO NOT EDIT: generated by modrpc gen from {VALIDATE_PROTO} "
        f"(bufbuild/protovalidate {PROTOVALIDATE_VERSION}, vendored in runtime/gtype/proto)."
    )
    target = gen / "buf" / "validate"
    target.mkdir(parents=True)
    for parent in (gen / "buf", target):
        (parent / "__init__.py").write_text(f'# {header}\n"""buf.validate (protovalidate) rules."""\n', encoding="utf-8")
    for name, text in compile_buf_validate(root=gen.name, header=header).items():
        if "_grpc" not in name:  # validate.proto declares no services
            (target / name).write_text(text, encoding="utf-8")


def _compare(expected: Path, actual: Path, root: Path, result: GenResult) -> None:
    """Name every file that differs, is missing from, or is extra in ``actual``."""
    want = {p.relative_to(expected) for p in expected.rglob("*") if p.is_file()}
    have = {p.relative_to(actual) for p in actual.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    for rel in sorted(want - have):
        result.stale.append(f"{_rel(actual / rel, root)}: missing")
    for rel in sorted(have - want):
        result.stale.append(f"{_rel(actual / rel, root)}: not generated by the current schemas")
    for rel in sorted(want & have):
        if not filecmp.cmp(expected / rel, actual / rel, shallow=False):
            result.stale.append(f"{_rel(actual / rel, root)}: stale")


def _swap(staged: Path, target: Path) -> None:
    """Replace directory ``target`` with ``staged`` (same filesystem), keeping no half state."""
    backup = target.with_name(f".{target.name}.old")
    if backup.exists():
        shutil.rmtree(backup)
    if target.exists():
        os.replace(target, backup)
    os.replace(staged, target)
    if backup.exists():
        shutil.rmtree(backup)


def generate(
    root: Path,
    modules: Sequence[ModuleSource],
    *,
    check: bool = False,
    date: str | None = None,
    now: Callable[[], float] = time.time,
) -> GenResult:
    """Record new versions and (re)write ``proto/`` and ``gen/`` under ``root``; see module doc.

    Only the given modules' folders (``gen/<m>``, ``proto/<m>``) are written or checked: the
    generated code of every other module, and of modules no longer in the project, is left as
    it is, so generating one folder of modules never touches another's.
    """
    result = GenResult()
    today = date or _dt.datetime.fromtimestamp(now(), _dt.UTC).date().isoformat()
    with tempfile.TemporaryDirectory(prefix=".modrpc-gen-", dir=root) as tmp:
        out = Path(tmp)
        (out / "gen").mkdir()
        (out / "proto").mkdir()
        for name, text in _SHARED.items():
            (out / name).write_text(text, encoding="utf-8")
        _write_buf_validate(out / "gen")
        staged_modules: list[tuple[ModuleSource, Path]] = []
        rendered: list[str] = []
        for src in sorted(modules, key=lambda m: m.name):
            out_modules = out / "modules" / src.name
            out_modules.mkdir(parents=True)
            history = VersionHistory.load(src.name, src.directory / "versions")
            lock_path = src.directory / "fields.lock.json"
            lock = FieldLock.load(lock_path)
            _record_version(
                src, history, date=today, now=now(), check=check, result=result, root=root,
                out_modules=out_modules,
            )  # fmt: skip
            # A stub left unfilled would answer old callers INTERNAL: with --check it is as stale
            # as anything generated; otherwise every run names it until it is filled.
            unfilled = unfilled_transformers(src.directory, root=root)
            if check:
                result.stale += unfilled
            else:
                result.unfilled += [p for p in unfilled if p.split(":", 1)[0] not in result.stubs]
            if not history.records:
                continue
            try:
                _render_module(src, history, lock, out, _source_dir(src, root))
            except WireSchemaError as exc:
                raise WireSchemaError(f"module {src.name}: {exc}") from exc
            rendered.append(src.name)
            if lock.changed:
                if check:
                    result.stale.append(f"{_rel(lock_path, root)}: new field numbers are not locked")
                else:
                    (out_modules / "fields.lock.json").write_text(lock.dumps(), encoding="utf-8")
            staged_modules.append((src, out_modules))
        if check:
            for name in _SHARED:
                _compare_file(out / name, root / name, root, result)
            _compare(out / "gen" / "buf", root / "gen" / "buf", root, result)
            for name in rendered:
                _compare(out / "gen" / name, root / "gen" / name, root, result)
                _compare(out / "proto" / name, root / "proto" / name, root, result)
            return result
        for src, staged in staged_modules:
            for path in sorted(p for p in staged.rglob("*") if p.is_file()):
                target = src.directory / path.relative_to(staged)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
        for name in _SHARED:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(out / name, root / name)
        _swap(out / "gen" / "buf", root / "gen" / "buf")
        for name in rendered:
            for tree in ("gen", "proto"):
                _swap(out / tree / name, root / tree / name)
                result.written.append(f"{tree}/{name}/")
    return result


def _source_dir(src: ModuleSource, root: Path) -> str:
    """The module folder as generated headers name it: relative to the project root.

    A folder outside the project is named by its last two parts, never by an absolute path, so
    the output does not depend on where the project is checked out.
    """
    try:
        return src.directory.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return f"{src.directory.resolve().parent.name}/{src.name}"


def _compare_file(expected: Path, actual: Path, root: Path, result: GenResult) -> None:
    if not actual.is_file():
        result.stale.append(f"{_rel(actual, root)}: missing")
    elif not filecmp.cmp(expected, actual, shallow=False):
        result.stale.append(f"{_rel(actual, root)}: stale")


_BUF_YAML = """\
# DO NOT EDIT: generated by modrpc gen.
# Each folder proto/<module>/<version>/ is one self-contained version of a module. Every version
# of a module declares the same package (users.v1, so clients keep one method path and pick the
# version with x-api-version), so the folders cannot share one buf workspace: lint each folder
# as its own input with this config (make lint does):
#   buf lint proto/<module>/<version> --config proto/buf.yaml
# Each folder also holds upstream's buf/validate/validate.proto (protovalidate v1.2.2, which buf
# cannot fetch from the BSR offline), so its buf.validate imports resolve; that file is not ours
# to lint or to check for breaking changes. STANDARD rules apply to everything else, with no
# exceptions. Breaking changes between two versions, as wire and JSON clients see them:
#   buf breaking proto/<module>/<new> --against proto/<module>/<old> --config proto/buf.yaml --against-config proto/buf.yaml
version: v1
lint:
  use:
    - STANDARD
  ignore:
    - buf/validate
breaking:
  use:
    - WIRE_JSON
  ignore:
    - buf/validate
"""

_SHARED = {
    "gen/__init__.py": '# DO NOT EDIT: generated by modrpc gen.\n"""Generated code for every module in modules/."""\n',
    "gen/py.typed": "",
    "proto/buf.yaml": _BUF_YAML,
}
"""Files of gen/ and proto/ that belong to no one module."""
