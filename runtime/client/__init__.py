"""The module client: pooled, retrying, deadline-carrying, traced calls to modules.

The gateway and ``gctx.modules`` both reach workers through a :class:`ModuleClient`:

* :class:`InstancePool` holds a :class:`~runtime.transport.Transport` per instance (the worker's
  lane, else gRPC; or the module's endpoints in this process), picks them round-robin, and
  ejects instances that fail at the transport or hang (:class:`Outliers`);
* :class:`RetryPolicy` and :class:`RetryBudget` retry what may be retried, with jittered
  exponential backoff, never past the caller's deadline; a method's policy comes from its
  ``module.toml``.
"""

from runtime.client._client import ModuleClient
from runtime.client._pool import InstancePool, Outliers
from runtime.client._retry import RetryPolicy

__all__ = [
    "InstancePool",
    "ModuleClient",
    "Outliers",
    "RetryPolicy",
]
