"""GlobalContext (``gctx``): module clients, config, secrets, metrics, topics and versions."""

from runtime.context._clock import Clock, SystemClock
from runtime.context._config import ReadOnlyConfig, freeze
from runtime.context._global import (
    GlobalContext,
    SecretSource,
    current_deadline,
    current_principal,
    current_request_id,
    encode_payload,
)
from runtime.context._modules import MethodTarget, ModuleInvoker, ModuleProxy, ModuleRegistry
from runtime.context._subscriber import SubscriberMark, subscriber, subscriber_mark

__all__ = [
    "Clock",
    "GlobalContext",
    "MethodTarget",
    "ModuleInvoker",
    "ModuleProxy",
    "ModuleRegistry",
    "ReadOnlyConfig",
    "SecretSource",
    "SubscriberMark",
    "SystemClock",
    "current_deadline",
    "current_principal",
    "current_request_id",
    "encode_payload",
    "freeze",
    "subscriber",
    "subscriber_mark",
]
