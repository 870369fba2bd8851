"""Workers: serve a module's handlers inside the request lifecycle, over gRPC, the lane and in
process, all through one endpoint per method."""

from runtime.worker._server import Worker

__all__ = ["Worker"]
