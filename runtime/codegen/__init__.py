"""Codegen: GType schemas → ``.proto`` files (constraints as ``buf.validate`` rules), Python messages and stubs, clients.

``modrpc gen`` runs :func:`generate`; see ``_generate`` for what it writes and how it keeps
the output deterministic and atomic.
"""

from runtime.codegen._generate import GenResult, ModuleSource, generate
from runtime.codegen._proto import render_proto
from runtime.codegen._pycode import render_client
from runtime.codegen._transformers import (
    changed_directions,
    render_transformer_stub,
    transformer_module,
    transformer_path,
)

__all__ = [
    "GenResult",
    "ModuleSource",
    "changed_directions",
    "generate",
    "render_client",
    "render_proto",
    "render_transformer_stub",
    "transformer_module",
    "transformer_path",
]
