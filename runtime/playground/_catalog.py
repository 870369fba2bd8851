"""The catalog: every module the gateway routes, as JSON for the page.

Read from the gateway's current route table, which is built from the manifest store: so the
page shows what is served now, version by version, with the policies the gateway enforces and
the diff engine's own verdicts (:func:`runtime.gtype.diff`) between any two versions.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from google.protobuf import descriptor_pb2

from runtime.errors import InvalidArgument, NotFound
from runtime.gtype import diff
from runtime.playground._schema import example, field_rows
from runtime.versions import VersionCatalog, VersionInfo
from runtime.wire import method_path, request_message, response_message

__all__ = ["module_detail", "modules_summary", "version_diff", "version_schema"]


def _labels_of(catalog: VersionCatalog) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for label, version in sorted(catalog.labels.items()):
        out.setdefault(version, []).append(label)
    return out


def _handlers(catalog: VersionCatalog) -> dict[str, Mapping[str, Any]]:
    manifest = catalog.latest.manifest
    return {str(h["method"]): h for h in manifest.get("handlers", ()) if "method" in h}


def modules_summary(modules: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One line per module: name, description, versions, the default version, health."""
    out = []
    for name in sorted(modules):
        entry = modules[name]
        catalog: VersionCatalog = entry.catalog
        out.append(
            {
                "name": name,
                "description": str(catalog.latest.manifest.get("description", "")),
                "versions": [v.id for v in catalog.versions],
                "default": _default(catalog),
                "served": list(entry.served),
                "methods": sorted({m.name for v in catalog.versions for m in v.schema.methods}),
                "service": method_path(name, "X").split("/")[1],
            }
        )
    return out


def _default(catalog: VersionCatalog) -> str | None:
    try:
        return catalog.resolve(None)
    except Exception:  # no stable/latest label and nothing resolvable: shown as unknown
        return None


def module_detail(modules: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Everything the catalog page shows of one module."""
    entry = _module(modules, name)
    catalog: VersionCatalog = entry.catalog
    labels = _labels_of(catalog)
    handlers = _handlers(catalog)
    manifest = catalog.latest.manifest
    versions = []
    for info in catalog.versions:
        route = catalog.route(info.id, entry.served)
        parent_diff = diff(catalog.by_id[info.parent].schema, info.schema) if info.parent in catalog.by_id else None
        versions.append(
            {
                "id": info.id,
                "created_at": info.created_at,
                "created": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(info.created_at)),
                "parent": info.parent,
                "breaking": info.breaking,
                "labels": labels.get(info.id, []),
                "served": info.id in entry.served,
                "retired": info.id in entry.retired,
                "cold": info.id in entry.cold,
                "transformer": info.transformer_source is not None,
                "methods": [m.name for m in info.schema.methods],
                "fingerprint": info.schema.fingerprint(),
                "route": None if route is None else {"target": route[0], "hops": [s.name for s in route[1]]},
                "changes": None if parent_diff is None else {
                    "total": len(parent_diff.changes),
                    "breaking": len(parent_diff.breaking_changes()),
                },
            }
        )
    methods = []
    for method in sorted({m.name for v in catalog.versions for m in v.schema.methods}):
        handler = handlers.get(method, {})
        methods.append(
            {
                "name": method,
                "path": method_path(name, method),
                "handler": f"{name}.{method}",
                "policy": handler.get("policy", {}),
                "hooks": list(handler.get("hooks", ())),
                "versions": [v.id for v in catalog.versions if any(m.name == method for m in v.schema.methods)],
            }
        )
    return {
        "name": name,
        "description": str(manifest.get("description", "")),
        "semver": manifest.get("semver"),
        "capabilities": manifest.get("capabilities", {}),
        "warm_pool": manifest.get("warm_pool"),
        "default": _default(catalog),
        "served": list(entry.served),
        "versions": versions,
        "methods": methods,
    }


def version_schema(modules: Mapping[str, Any], name: str, version: str) -> dict[str, Any]:
    """One version's methods, each with request and response field rows and an example request."""
    entry = _module(modules, name)
    info = _version(entry.catalog, version)
    schema = info.schema
    numbers = _numbers(info.descriptor)
    methods = []
    for m in schema.methods:
        request, response = schema.resolve(m.request), schema.resolve(m.response)
        methods.append(
            {
                "name": m.name,
                "request": {
                    "message": request_message(m.name),
                    "type": request.name,
                    "fields": _numbered(field_rows(request, schema), numbers.get(request_message(m.name), {})),
                },
                "response": {
                    "message": response_message(m.name),
                    "type": response.name,
                    "fields": _numbered(field_rows(response, schema), numbers.get(response_message(m.name), {})),
                },
                "example": example(request, schema),
            }
        )
    return {"module": name, "version": info.id, "methods": methods}


def _numbered(rows: list[dict[str, Any]], numbers: Mapping[str, int]) -> list[dict[str, Any]]:
    for row in rows:
        if row["depth"] == 0:
            row["number"] = numbers.get(row["name"])
    return rows


def _numbers(fdp: descriptor_pb2.FileDescriptorProto) -> dict[str, dict[str, int]]:
    return {m.name: {f.name: f.number for f in m.field} for m in fdp.message_type}


def version_diff(modules: Mapping[str, Any], name: str, old: str, new: str) -> dict[str, Any]:
    """Every change from ``old`` to ``new``, each marked breaking or not, and the transformer
    steps that bridge the two (oldest first), with their source."""
    entry = _module(modules, name)
    catalog: VersionCatalog = entry.catalog
    a, b = _version(catalog, old), _version(catalog, new)
    result = diff(a.schema, b.schema, old_numbers=_numbers(a.descriptor), new_numbers=_numbers(b.descriptor))
    earlier, later = (a, b) if (a.created_at, a.id) <= (b.created_at, b.id) else (b, a)
    chain = catalog.chain(earlier.id, later.id) if earlier.id != later.id else []
    steps = []
    for step in chain or ():
        info = catalog.by_id[step.to_version]
        steps.append(
            {
                "from": step.from_version,
                "to": step.to_version,
                "breaking": info.breaking,
                "forward": sorted(step.forward),
                "backward": sorted(step.backward),
                "source": info.transformer_source,
            }
        )
    return {
        "module": name,
        "from": a.id,
        "to": b.id,
        "direction": "forward" if earlier is a else "backward",
        "breaking": result.breaking,
        "changes": [
            {"path": c.path, "kind": c.kind, "breaking": c.breaking, "detail": c.detail} for c in result.changes
        ],
        "bridged": chain is not None,
        "steps": steps,
    }


def _module(modules: Mapping[str, Any], name: str) -> Any:
    entry = modules.get(name)
    if entry is None:
        known = ", ".join(sorted(modules)) or "none yet"
        raise NotFound(f"no module named {name!r} is routed by the gateway (known: {known})")
    return entry


def _version(catalog: VersionCatalog, version: str) -> VersionInfo:
    if not version:
        raise InvalidArgument("a version is needed")
    return catalog.by_id[catalog.resolve(version)]
