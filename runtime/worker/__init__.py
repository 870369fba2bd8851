"""Workers: serve a module's handlers inside the request lifecycle, over gRPC, the lane and in
process, all through one endpoint per method."""

from runtime.worker._server import Worker
from runtime.worker._service import ModuleService, WorkerDeps, load_catalog

__all__ = ["ModuleService", "Worker", "WorkerDeps", "load_catalog"]
