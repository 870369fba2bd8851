"""Each package's public surface is exactly what it says: pinned here, so a change is deliberate.

The packages with their own export tests (gtype, lcc, fabric, ...) are pinned there; these are
the ones that compose them.
"""

from __future__ import annotations

import importlib

import pytest

SURFACES = {
    "runtime": ["GlobalContext", "LocalContext", "handler", "subscriber"],
    "runtime.context": [
        "Clock", "GlobalContext", "MethodTarget", "ModuleInvoker", "ModuleProxy", "ModuleRegistry",
        "ReadOnlyConfig", "SecretSource", "SubscriberMark", "SystemClock", "current_deadline", "current_principal",
        "current_request_id",
        "encode_payload", "freeze", "subscriber", "subscriber_mark",
    ],
    "runtime.gateway": [
        "ApiKey", "Authenticator", "Gateway", "authenticator_from_settings", "hash_api_key",
        "issue_dev_token", "jwt_secret_in_force",
    ],
    "runtime.worker": ["AuditObserver", "ModuleService", "Worker", "WorkerDeps", "load_catalog"],
    "runtime.cli": ["main"],
    "runtime.project": [
        "PROJECT_FILE", "Project", "ProjectError", "find_project", "new_module", "new_project",
    ],
    "runtime.testing": [
        "TEST_PRINCIPAL", "DictSecrets", "ManualClock", "ModuleCall", "ModuleHarness", "Published",
        "RecordingFabric", "Stub", "StubModules",
    ],
    "runtime.identity": [
        "ANONYMOUS", "PEER_DOMAIN", "PRINCIPAL_HEADER", "AuthMethod", "Peer", "PeerKind", "Principal",
        "check_roles", "current_peer", "is_valid_request_id", "missing_roles", "new_request_id",
        "principal_from_header", "principal_header", "request_id_of",
    ],
    "runtime.tls": [
        "CA_CERT", "CA_KEY", "DEV_HOSTS", "CertificateAuthority", "InternalTls", "IssuedCertificate",
        "KeyPair", "Peer", "TlsError", "ensure_identity", "peer_of_grpc", "peer_of_ssl",
    ],
    "runtime.deadline": ["Clock", "Deadline"],
}  # fmt: skip


@pytest.mark.parametrize("package", sorted(SURFACES))
def test_the_public_surface_is_pinned_and_every_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    assert list(module.__all__) == SURFACES[package]
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"


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
