"""Tracing setup: an SDK TracerProvider, exporting over OTLP only when an endpoint is configured.

The OTLP exporter is an optional extra (``pip install opentelemetry-exporter-otlp``); it is
imported only when ``otlp_endpoint`` is set, and a missing package is reported as a
:class:`~runtime.config.ConfigError` that names it, at startup rather than at the first span.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from runtime.config import ConfigError

__all__ = ["OTLP_PACKAGE", "configure_tracing"]

OTLP_PACKAGE = "opentelemetry-exporter-otlp"
_OTLP_MODULE = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"


def configure_tracing(
    service_name: str,
    *,
    otlp_endpoint: str | None = None,
    install_global: bool = False,
    processors: Sequence[SpanProcessor] = (),
) -> TracerProvider:
    """A TracerProvider for ``service_name``; spans go to ``otlp_endpoint`` when it is set.

    Without an endpoint spans are still created (interceptors tag them with the request id,
    handler and version) but not exported. ``install_global`` also makes it the process's global
    provider, for instrumentation that does not take one explicitly. Call ``shutdown()`` on the
    result to flush pending spans on exit.

        >>> provider = configure_tracing("demo")
        >>> provider.resource.attributes["service.name"]
        'demo'
    """
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if otlp_endpoint:
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(otlp_endpoint)))
    for processor in processors:
        provider.add_span_processor(processor)
    if install_global:
        trace.set_tracer_provider(provider)
    return provider


def _otlp_exporter(endpoint: str) -> Any:
    try:
        module = importlib.import_module(_OTLP_MODULE)
    except ImportError as exc:
        raise ConfigError(
            f"observability.otlp_endpoint is set to {endpoint!r}, but OTLP export needs the "
            f"'{OTLP_PACKAGE}' package, which is not installed: pip install {OTLP_PACKAGE} "
            "(or unset MODRPC_OBSERVABILITY__OTLP_ENDPOINT)"
        ) from exc
    return module.OTLPSpanExporter(endpoint=endpoint)
