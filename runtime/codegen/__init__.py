"""Codegen: GType schemas → ``.proto`` files (constraints as ``buf.validate`` rules), Python messages and stubs, clients.

``modrpc gen`` runs :func:`generate`; see ``_generate`` for what it writes and how it keeps
the output deterministic and atomic.
"""

from runtime.codegen._generate import GenResult, ModuleSource, generate

__all__ = [
    "GenResult",
    "ModuleSource",
    "generate",
]
