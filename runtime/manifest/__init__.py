"""Module and handler manifests, handler registration, and capabilities.

- ``module.toml`` is the manifest an author writes: :func:`load_manifest` -> :class:`ModuleManifest`.
- ``@handler`` marks a function; :func:`register_handler` accepts it iff it has the handler shape.
- :func:`load_module` turns a module folder into a :class:`LoadedModule` (handlers, hooks, schema).
- :class:`CapabilitySet` answers "may this module do X?"; :func:`check_registration` refuses a
  module that asks for an unknown module or uses something it did not declare.
- :func:`build_manifests` derives the generated :class:`HandlerManifest` of every handler.
"""

from runtime.manifest._capabilities import CapabilitySet
from runtime.manifest._handler import HandlerSpec, handler
from runtime.manifest._loader import LoadedModule, ResolvedHook, discover_modules, load_module
from runtime.manifest._names import service_name, topic_covers
from runtime.manifest._record import build_manifests
from runtime.manifest._scan import check_registration
from runtime.manifest._toml import MethodPolicy, RetryPolicy, load_manifest

__all__ = [
    "CapabilitySet",
    "HandlerSpec",
    "LoadedModule",
    "MethodPolicy",
    "ResolvedHook",
    "RetryPolicy",
    "build_manifests",
    "check_registration",
    "discover_modules",
    "handler",
    "load_manifest",
    "load_module",
    "service_name",
    "topic_covers",
]
