"""Timescape: version ids, resolution of ``x-api-version``, catalogs and transformer chains.

Shared by the gateway and the workers, so neither imports the other.
"""

from runtime.versions._catalog import (
    VersionCatalog,
    VersionInfo,
    decode_descriptor,
    encode_descriptor,
)
from runtime.versions._chain import MAX_HOPS, TransformStep, Transformer, run_chain
from runtime.versions._resolve import VersionId, VersionTable

__all__ = [
    "MAX_HOPS",
    "TransformStep",
    "Transformer",
    "VersionCatalog",
    "VersionId",
    "VersionInfo",
    "VersionTable",
    "decode_descriptor",
    "encode_descriptor",
    "run_chain",
]
