"""What a module may touch, asked and enforced at run time.

A :class:`CapabilitySet` answers "may this module do X?" from the ``[capabilities]`` table of its
manifest. ``allows_*`` answer with a bool; ``require_*`` raise
:class:`~runtime.errors.PermissionDenied` (an expected error: PERMISSION_DENIED for the caller)
naming the missing declaration, so the author knows exactly what to add::

    module 'orders' did not declare capability modules=['payments']

Topics follow NATS subject rules: ``*`` matches one token and ``>`` one or more trailing tokens.
A subscription with wildcards is allowed only when a declared pattern covers all of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runtime.errors import PermissionDenied
from runtime.manifest._names import topic_covers
from runtime.manifest._toml import Capabilities, ModuleManifest

__all__ = ["CapabilitySet"]


@dataclass(frozen=True, slots=True)
class CapabilitySet:
    """The capabilities one module declared. Nothing outside them is allowed."""

    module: str
    modules: frozenset[str] = frozenset()
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    secrets: frozenset[str] = frozenset()
    network: frozenset[tuple[str, int]] = frozenset()
    """(lower-case host, port) pairs."""

    @classmethod
    def from_manifest(cls, manifest: ModuleManifest) -> CapabilitySet:
        return cls.from_capabilities(manifest.module.name, manifest.capabilities)

    @classmethod
    def from_capabilities(cls, module: str, caps: Capabilities) -> CapabilitySet:
        """The set for ``module`` from its ``[capabilities]`` table."""
        return cls(
            module=module,
            modules=frozenset(caps.modules),
            publish=tuple(caps.publish),
            subscribe=tuple(caps.subscribe),
            secrets=frozenset(caps.secrets),
            network=frozenset(_host_port(entry) for entry in caps.network),
        )

    # -- questions ------------------------------------------------------------------------------
    def allows_module(self, name: str) -> bool:
        """May this module call module ``name``? Calling itself must be declared like any other."""
        return name in self.modules

    def allows_publish(self, topic: str) -> bool:
        """May it publish to ``topic``?"""
        return any(topic_covers(pattern, topic) for pattern in self.publish)

    def allows_subscribe(self, topic: str) -> bool:
        """May it subscribe to ``topic`` (itself possibly a wildcard pattern)?"""
        return any(topic_covers(pattern, topic) for pattern in self.subscribe)

    def allows_secret(self, name: str) -> bool:
        """May it read the secret ``name``?"""
        return name in self.secrets

    def allows_network(self, host: str, port: int) -> bool:
        """May it open a connection to ``host:port``? Host names compare case-insensitively."""
        return (_normal_host(host), port) in self.network

    # -- enforcement ----------------------------------------------------------------------------
    def require_module(self, name: str) -> None:
        if not self.allows_module(name):
            self._deny("modules", name)

    def require_publish(self, topic: str) -> None:
        if not self.allows_publish(topic):
            self._deny("publish", topic)

    def require_subscribe(self, topic: str) -> None:
        if not self.allows_subscribe(topic):
            self._deny("subscribe", topic)

    def require_secret(self, name: str) -> None:
        if not self.allows_secret(name):
            self._deny("secrets", name)

    def require_network(self, host: str, port: int) -> None:
        if not self.allows_network(host, port):
            self._deny("network", f"{_normal_host(host)}:{port}")

    def _deny(self, key: str, value: str) -> None:
        raise PermissionDenied(
            f"module {self.module!r} did not declare capability {key}=[{value!r}]"
        )

    def to_json(self) -> dict[str, Any]:
        """The declarations as sorted lists, for manifests and canonical JSON."""
        return {
            "modules": sorted(self.modules),
            "publish": sorted(self.publish),
            "subscribe": sorted(self.subscribe),
            "secrets": sorted(self.secrets),
            "network": sorted(f"{host}:{port}" for host, port in self.network),
        }


def _normal_host(host: str) -> str:
    host = host.lower()
    if ":" in host and not host.startswith("["):  # a bare IPv6 address, as a socket API gives it
        return f"[{host}]"
    return host


def _host_port(entry: str) -> tuple[str, int]:
    host, _, port = entry.rpartition(":")
    return host, int(port)
