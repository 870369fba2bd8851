"""Module and handler manifests, handler registration, and capabilities.

- ``module.toml`` is the manifest an author writes: :func:`load_manifest` -> :class:`ModuleManifest`.
- ``@handler`` marks a function; :func:`register_handler` accepts it iff it has the handler shape.
- :func:`load_module` turns a module folder into a :class:`LoadedModule` (handlers, hooks, schema).
- :class:`CapabilitySet` answers "may this module do X?"; :func:`check_registration` refuses a
  module that asks for an unknown module or uses something it did not declare.
- :func:`build_manifests` derives the generated :class:`HandlerManifest` of every handler.
"""

from runtime.manifest._capabilities import CapabilitySet
from runtime.manifest._handler import (
    HandlerMark,
    HandlerSpec,
    handler,
    handler_mark,
    is_message_type,
    register_handler,
    shape_problem,
)
from runtime.manifest._loader import LoadedModule, ResolvedHook, discover_modules, load_module
from runtime.manifest._names import method_path, package_name, pascal, service_name, topic_covers
from runtime.manifest._record import (
    HandlerManifest,
    HookRecord,
    ModuleManifestRecord,
    TypeRef,
    build_manifests,
    type_ref,
)
from runtime.manifest._scan import CapabilityUse, check_registration, scan_source
from runtime.manifest._toml import (
    DEFAULT_HOOK_TIMEOUT,
    DEFAULT_TIMEOUT,
    Capabilities,
    HookDecl,
    MethodPolicy,
    ModuleInfo,
    ModuleManifest,
    RetryPolicy,
    load_manifest,
    parse_manifest,
)

__all__ = [
    "DEFAULT_HOOK_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "Capabilities",
    "CapabilitySet",
    "CapabilityUse",
    "HandlerManifest",
    "HandlerMark",
    "HandlerSpec",
    "HookDecl",
    "HookRecord",
    "LoadedModule",
    "MethodPolicy",
    "ModuleInfo",
    "ModuleManifest",
    "ModuleManifestRecord",
    "ResolvedHook",
    "RetryPolicy",
    "TypeRef",
    "build_manifests",
    "check_registration",
    "discover_modules",
    "handler",
    "handler_mark",
    "is_message_type",
    "load_manifest",
    "load_module",
    "method_path",
    "package_name",
    "parse_manifest",
    "pascal",
    "register_handler",
    "scan_source",
    "service_name",
    "shape_problem",
    "topic_covers",
    "type_ref",
]
