"""``gctx.modules``: a typed client for every module this module declared.

``gctx.modules.users.get_user(GetUser(id=...))`` takes and returns the callee's own pydantic
models; serialisation, the deadline, the request id and the trace context are carried by the
:class:`ModuleInvoker` the worker supplies. An undeclared module is refused with
PERMISSION_DENIED naming the missing capability, before anything goes on the wire.

Streaming methods keep their shape: a server-streaming method takes one request and gives an
async iterator of responses, a client-streaming one takes an async iterable of requests and
returns one response, a bidirectional one takes an iterable and gives an iterator::

    async for note in gctx.modules.notifications.watch_notifications(WatchNotifications()):
        ...
    summary = await gctx.modules.inventory.restock_batch(restocks())
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from runtime.lcc import current_context
from runtime.manifest import CapabilitySet
from runtime.wire import snake

__all__ = ["MethodTarget", "ModuleInvoker", "ModuleProxy", "ModuleRegistry"]


@dataclass(frozen=True, slots=True)
class MethodTarget:
    """One callable method of another module, with its request and response model types."""

    module: str
    method: str
    request_type: type[Any]
    """The request model (of each request message, for a client-streaming method)."""
    response_type: type[Any]
    """The response model (of each response message, for a server-streaming method)."""
    idempotent: bool = False
    client_streaming: bool = False
    server_streaming: bool = False


class ModuleInvoker(Protocol):
    """Sends calls to another module and decodes what comes back."""

    async def __call__(self, target: MethodTarget, request: Any) -> Any:
        """One unary call: its decoded response."""
        ...

    def stream(self, target: MethodTarget, requests: AsyncIterable[Any]) -> AsyncIterator[Any]:
        """One streaming call: its decoded response messages, as they arrive."""
        ...


class ModuleProxy:
    """The client of one module; its attributes are the module's methods in snake_case."""

    def __init__(self, module: str, methods: Mapping[str, MethodTarget], invoke: ModuleInvoker) -> None:
        self._module = module
        self._calls: dict[str, Callable[[Any], Any]] = {}
        for target in methods.values():
            self._calls[snake(target.method)] = self._bind(target, invoke)

    @staticmethod
    def _bind(target: MethodTarget, invoke: ModuleInvoker) -> Callable[[Any], Any]:
        model = target.request_type if issubclass(target.request_type, BaseModel) else None
        handler_id = f"{target.module}.{target.method}"

        def coerce(request: Any) -> Any:
            if model is not None and not isinstance(request, model):
                return model.model_validate(request)  # a dict, or another module's model
            return request

        async def coerced(requests: AsyncIterable[Any]) -> AsyncIterator[Any]:
            async for request in requests:
                yield coerce(request)

        async def single(request: Any) -> AsyncIterator[Any]:
            yield coerce(request)

        call: Callable[[Any], Any]
        if target.server_streaming:
            # Streams are not recorded as effects: a replay has no one stream to answer from.

            def call(request: Any) -> AsyncIterator[Any]:
                return invoke.stream(target, coerced(request) if target.client_streaming else single(request))

        elif target.client_streaming:

            async def call(requests: Any) -> Any:
                responses = [response async for response in invoke.stream(target, coerced(requests))]
                return responses[-1] if responses else None

        else:

            async def call(request: Any) -> Any:
                request = coerce(request)
                lctx = current_context()
                if lctx is None:  # outside a request (a subscriber): nothing to record it in
                    return await invoke(target, request)
                # Recorded in the request: a lifecycle event with its duration (audit, traces) and
                # the request and answer, which a replay of the request's snapshot answers from.
                started = time.perf_counter()
                try:
                    response = await invoke(target, request)
                except BaseException as exc:
                    lctx.record_effect("module_call", handler_id, request, started=started, error=exc)
                    raise
                lctx.record_effect("module_call", handler_id, request, started=started, response=response)
                return response

        call.__name__ = snake(target.method)
        call.__qualname__ = f"{target.module}.{snake(target.method)}"
        return call

    def __getattr__(self, name: str) -> Callable[[Any], Any]:
        try:
            return self._calls[name]
        except KeyError:
            raise AttributeError(
                f"module {self._module!r} has no method {name!r}; it has {sorted(self._calls)}"
            ) from None

    def __dir__(self) -> list[str]:
        return sorted(self._calls)


class ModuleRegistry:
    """``gctx.modules``: attribute access per module, checked against the declared capabilities."""

    def __init__(
        self,
        capabilities: CapabilitySet,
        targets: Mapping[str, Mapping[str, MethodTarget]],
        invoke: ModuleInvoker,
    ) -> None:
        self._caps = capabilities
        self._targets = targets
        self._proxies = {name: ModuleProxy(name, methods, invoke) for name, methods in targets.items()}

    def rebound(self, invoke: ModuleInvoker) -> ModuleRegistry:
        """The same modules and capabilities, with calls sent through ``invoke`` instead.

        A replay's sandbox uses it to answer module calls from a snapshot's recorded results.
        """
        return ModuleRegistry(self._caps, self._targets, invoke)

    def target(self, handler_id: str) -> MethodTarget | None:
        """The callable method ``module.Method`` of a declared module, if there is one."""
        module, _, method = handler_id.partition(".")
        return self._targets.get(module, {}).get(method)

    def __getattr__(self, name: str) -> ModuleProxy:
        if name.startswith("__"):
            raise AttributeError(name)
        self._caps.require_module(name)
        try:
            return self._proxies[name]
        except KeyError:
            raise AttributeError(f"no module named {name!r} is loaded") from None

    def __contains__(self, name: object) -> bool:
        return name in self._proxies and self._caps.allows_module(str(name))

    def names(self) -> list[str]:
        """The modules reachable from here: declared and loaded."""
        return sorted(n for n in self._proxies if self._caps.allows_module(n))
