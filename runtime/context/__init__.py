"""GlobalContext (``gctx``): module clients, config, secrets, metrics, topics and versions."""

from runtime.context._clock import Clock
from runtime.context._global import (
    GlobalContext,
    current_batch,
    current_deadline,
    current_principal,
    current_request_id,
    encode_payload,
)
from runtime.context._modules import MethodTarget, ModuleRegistry
from runtime.context._subscriber import subscriber, subscriber_mark

__all__ = [
    "Clock",
    "GlobalContext",
    "MethodTarget",
    "ModuleRegistry",
    "current_batch",
    "current_deadline",
    "current_principal",
    "current_request_id",
    "encode_payload",
    "subscriber",
    "subscriber_mark",
]
