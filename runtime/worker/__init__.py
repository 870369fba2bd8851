"""Workers: serve a module's handlers over gRPC inside the request lifecycle."""

from runtime.worker._directory import WorkerDirectory
from runtime.worker._endpoint import CallObserver, MethodEndpoint
from runtime.worker._local import InProcessContext, LocalEndpoints
from runtime.worker._server import AuditObserver, Worker
from runtime.worker._service import ModuleService, RemoteInvoker, WorkerDeps, load_catalog

__all__ = [
    "AuditObserver",
    "CallObserver",
    "InProcessContext",
    "LocalEndpoints",
    "MethodEndpoint",
    "ModuleService",
    "RemoteInvoker",
    "Worker",
    "WorkerDeps",
    "WorkerDirectory",
    "load_catalog",
]
