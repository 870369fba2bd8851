"""Each package's public surface is exactly what it says: pinned here, so a change is deliberate.

A package's ``__all__`` holds what other packages or users need (handler authors, test authors,
operators), not what only its own tests reach: those import the private module they test.
"""

from __future__ import annotations

import importlib

import pytest

SURFACES = {
    "runtime": ["GlobalContext", "LocalContext", "handler", "subscriber"],
    "runtime.cli": [
        "main",
    ],
    "runtime.client": [
        "InstancePool", "ModuleClient", "Outliers", "RetryPolicy",
    ],
    "runtime.codegen": [
        "GenResult", "ModuleSource", "generate",
    ],
    "runtime.config": [
        "DEV_JWT_SECRET", "ApiKeySettings", "AuthSettings", "ConfigError", "LimitsSettings",
        "ObservabilitySettings", "PlaygroundSettings", "RetentionSettings", "SecretsSettings",
        "Settings", "TlsSettings", "is_loopback", "load_settings", "mask_url", "setting_sources",
        "settings_table", "unknown_env",
    ],
    "runtime.context": [
        "Clock", "GlobalContext", "MethodTarget", "ModuleRegistry", "current_batch", "current_deadline",
        "current_principal", "current_request_id", "encode_payload", "subscriber", "subscriber_mark",
    ],
    "runtime.fabric": [
        "DLQ_ATTEMPTS_HEADER", "DLQ_ERROR_HEADER", "DLQ_GROUP_HEADER", "DLQ_MSG_ID_HEADER",
        "DLQ_TOPIC_HEADER", "Fabric", "FabricHub", "Message", "OutboxBatch", "OutboxRelay",
        "OutgoingMessage", "Subscription", "dead_letter_topic", "open_fabric",
    ],
    "runtime.gateway": [
        "Gateway", "authenticator_from_settings", "hash_api_key", "issue_dev_token", "jwt_secret_in_force",
    ],
    "runtime.gtype": [
        "PROTOVALIDATE_VERSION", "VALIDATE_PROTO", "VALIDATE_PROTO_ROOT", "Change", "Constraints",
        "Diff", "Field", "FieldViolation", "GType", "HandlerTypes", "Method", "Schema",
        "UnsupportedType", "add_buf_validate", "analyze_handler", "analyze_type", "build_schema",
        "canonical_json", "compiled", "describe", "diff", "fingerprint", "is_date", "is_datetime",
        "method_name", "options_with_rules", "register_custom_validator", "rules_of",
        "same_scalar", "stream_item", "validate", "validate_descriptor",
    ],
    "runtime.lane": [
        "PROTOCOL", "WHERE_METHOD", "LaneClient", "LaneLimits", "LaneServer", "LaneStream",
        "lane_limits", "parse_where", "where_handler",
    ],
    "runtime.lcc": [
        "DEADLINE_SLACK", "SNAPSHOT_FLAG", "EffectKind", "EventKind", "HookSpec", "Level", "LifecycleCall",
        "LifecycleEvent", "LocalContext", "LogSnapshotStore", "MemoryEventSink",
        "MemorySnapshotStore", "Phase", "ReplayDiff", "ReplayResult", "RequestMeta", "Snapshot",
        "SnapshotStore", "Spool", "Stream", "TraceChange", "ValueChange", "WriteBehindSnapshots", "current_context",
        "diff_replays",
        "parse_flags", "permitted_flags", "replay", "replay_meta", "run_captured", "run_hook", "run_lifecycle",
        "to_jsonable",
    ],
    "runtime.limits": [
        "PREMATURE", "AddressBans", "AnsweredStreams", "Offender", "ResetGuard", "admin_limits",
        "grpc_server_limits", "peer_address", "raise_open_file_limit",
    ],
    "runtime.manifest": [
        "CapabilitySet", "HandlerSpec", "LoadedModule", "MethodPolicy", "ResolvedHook",
        "RetryPolicy", "build_manifests", "check_registration", "discover_modules", "handler",
        "load_manifest", "load_module", "service_name", "topic_covers",
    ],
    "runtime.observability": [
        "HANDLER_ATTRIBUTE", "MODULE_ATTR", "REQUEST_ID_ATTRIBUTE", "STEP_EVENT",
        "VERSION_ATTRIBUTE", "AdminLimits", "AdminServer", "AuditObserver", "AuditRecord", "AuditSink",
        "AuditWriteError", "ClientTracer", "Counter", "Gauge", "Histogram", "LogTail", "Metrics",
        "RedMetrics", "ServerTracer", "SpanEvent", "SpanRecord", "TraceRing", "audit_redactor",
        "bounded", "configure_logging", "configure_tracing", "handler_var", "log_context",
        "open_audit_sink", "read_audit_file", "request_id_var", "start_admin_server",
        "version_var", "wants_console", "write_audit",
    ],
    "runtime.playground": [
        "GatewayView", "Playground",
    ],
    "runtime.project": [
        "Project", "ProjectError", "find_project", "new_module", "new_project",
    ],
    "runtime.ratelimit": [
        "Decision", "FailureMode", "RateLimit", "RateLimiter", "check_rate", "open_ratelimiter",
    ],
    "runtime.secrets": [
        "RedactingFilter", "Secret", "SecretProvider", "SecretsManager", "open_secrets",
    ],
    "runtime.store": [
        "LogStore", "ManifestStore", "StoreEvent", "VersionRecord", "VersionStore", "Watch",
        "WatchableStore", "WorkerRecord", "WorkerRegistry", "open_store",
    ],
    "runtime.testing": [
        "TEST_PRINCIPAL", "DictSecrets", "ManualClock", "ModuleCall", "ModuleHarness",
        "Published", "RecordingFabric", "Stub", "StubModules",
    ],
    "runtime.tls": [
        "CA_CERT", "CA_KEY", "CertificateAuthority", "InternalTls", "KeyPair", "TlsError",
        "ensure_identity", "peer_of_grpc", "peer_of_ssl",
    ],
    "runtime.transport": [
        "DEFAULT_MAX_MESSAGE_BYTES", "CallError", "Disconnected", "Endpoint", "FailedStream",
        "GrpcTransport", "InProcessModules", "MessageQueue", "Metadata", "MetadataIn",
        "ProducedStream", "Reply", "StreamCall", "StreamEndpoint", "Transport", "TransportError",
        "Unreached", "call_error", "request_failed", "stream_handler", "unary_handler",
        "until_half_closed",
    ],
    "runtime.versions": [
        "REMOVED_KEY", "Conversion", "LifecyclePolicy", "LifecycleState", "Override",
        "RecordedVersion", "RetirementDecision", "RetirementPlan", "UsageLedger",
        "VersionCatalog", "VersionHistory", "VersionInfo", "VersionedReflection",
        "apply_retirement", "build_version_files", "classify", "encode_descriptor", "is_removed",
        "is_retired", "is_version_id", "mark_removed", "parse_version_id", "plan",
        "plan_retirement", "promote", "record_usage", "refresh_states", "retired_error",
        "retirement_plan", "run_chain", "set_override", "state_of", "unfilled_transformers",
        "version_instant",
    ],
    "runtime.wire": [
        "SANDBOX_SERVICE", "FieldLock", "WireSchemaError", "WireVersion", "build_file",
        "handler_id_of", "method_path", "package_name", "pascal", "request_message",
        "response_message", "service_name", "serving_pool", "snake", "version_segment",
    ],
    "runtime.worker": [
        "ModuleService", "Worker", "WorkerDeps", "load_catalog",
    ],
}  # fmt: skip


@pytest.mark.parametrize("package", sorted(SURFACES))
def test_the_public_surface_is_pinned_sorted_and_every_name_resolves(package: str) -> None:
    # Sorted the way ruff (RUF022) sorts: CONSTANTS, then Classes, then functions.
    def kind(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    module = importlib.import_module(package)
    assert list(module.__all__) == SURFACES[package]
    assert list(module.__all__) == sorted(module.__all__, key=kind)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"


def test_every_package_is_pinned() -> None:
    from pathlib import Path

    root = Path(importlib.import_module("runtime").__file__ or "").parent
    packages = {f"runtime.{p.name}" for p in root.iterdir() if (p / "__init__.py").exists()}
    assert packages | {"runtime"} == set(SURFACES)


def test_the_gateway_does_not_import_the_worker() -> None:
    """No import goes back up the request flow (ARCHITECTURE.md): the gateway never needs a worker."""
    import ast
    from pathlib import Path

    for path in Path(importlib.import_module("runtime.gateway").__file__ or "").parent.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            )  # fmt: skip
            assert not any(n.startswith("runtime.worker") for n in names), f"{path.name} imports the worker"


def test_gtype_imports_nothing_else_of_the_runtime() -> None:
    import subprocess
    import sys

    probe = "import sys, runtime.gtype; print(sorted(m for m in sys.modules if m.startswith('runtime.')))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert all(m.startswith("runtime.gtype") for m in eval(out)), out
