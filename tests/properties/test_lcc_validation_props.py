"""Property tests of request and response validation in the lifecycle (SPEC §3 "Validation")."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from runtime.errors import InternalError, ValidationFailed, status_of
from runtime.gtype import GType, Schema, analyze_type, validate
from runtime.identity import new_request_id
from runtime.lcc import HookSpec, LifecycleCall, LocalContext, RequestMeta, run_lifecycle

HANDLER = "shop.Order"


def make_meta() -> RequestMeta:
    return RequestMeta(
        request_id=new_request_id(),
        handler=HANDLER,
        method="/shop.v1.Shop/Order",
        version="2025-06-01",
    )


class OrderRequest(BaseModel):
    sku: str = Field(min_length=1, max_length=8)
    qty: int = Field(ge=1, le=100)


class OrderResponse(BaseModel):
    total: int = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")


def compiled(model: type[BaseModel]) -> tuple[GType, Schema]:
    """The model's GType and schema, from the real analyzer, as the worker builds them."""
    types: dict[str, GType] = {}
    node = analyze_type(model, handler=HANDLER, field="req", types=types)
    return node, Schema(module="shop", types=tuple(types.values()))


def validator(model: type[BaseModel], log: list[str], label: str) -> Any:
    """A validator as the worker wires one: gtype's ``validate``, raising ValidationFailed."""
    node, schema = compiled(model)

    def check(value: Any) -> None:
        log.append(label)
        violations = validate(value, node, schema)
        if violations:
            raise ValidationFailed(f"{model.__name__} is invalid", violations)

    return check


@settings(max_examples=100, deadline=None)
@given(
    request=st.fixed_dictionaries(
        {"sku": st.text(max_size=10), "qty": st.integers(min_value=-5, max_value=120)}
    )
)
def test_the_request_is_validated_before_the_handler(request: dict[str, Any]) -> None:
    """Property 10: The request is validated before the handler.

    An invalid request fails with INVALID_ARGUMENT carrying every violation, after the before
    hooks and without the handler ever running; a valid one reaches the handler.
    """
    log: list[str] = []

    async def handler(req: dict[str, Any], lctx: LocalContext, gctx: Any) -> int:
        log.append("handler")
        return int(req["qty"])

    hooks = [HookSpec("b", "before", "global", lambda lctx, req: log.append("before"))]
    violations = validate(request, *compiled(OrderRequest))
    call = LifecycleCall(
        handler=handler, request=request, lctx=LocalContext(make_meta()), hooks=hooks,
        validate_request=validator(OrderRequest, log, "validate"),
    )  # fmt: skip
    try:
        result = asyncio.run(run_lifecycle(call))
    except ValidationFailed as exc:
        assert violations and exc.violations == violations
        assert status_of(exc).name == "INVALID_ARGUMENT"
        assert log == ["before", "validate"]
    else:
        assert not violations and result == request["qty"]
        assert log == ["before", "validate", "handler"]


@settings(max_examples=100, deadline=None)
@given(
    response=st.fixed_dictionaries(
        {
            "total": st.integers(min_value=-10, max_value=10),
            "currency": st.sampled_from(["EUR", "USD", "eur", "EURO", ""]),
        }
    )
)
def test_the_response_is_validated_after_the_handler(response: dict[str, Any]) -> None:
    """Property 11: The response is validated after the handler.

    A bad response reaches the caller as INTERNAL with a generic message (details go to the
    logs), the after hooks do not run and the catch hooks do; a good one passes through.
    """
    log: list[str] = []

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> dict[str, Any]:
        log.append("handler")
        return response

    hooks = [
        HookSpec("a", "after", "module", lambda lctx, req, resp: log.append("after")),
        HookSpec("c", "catch", "module", lambda lctx, req, exc: log.append("catch")),
    ]
    valid = response["total"] >= 0 and response["currency"] in ("EUR", "USD")
    call = LifecycleCall(
        handler=handler, request={}, lctx=LocalContext(make_meta()), hooks=hooks,
        validate_response=validator(OrderResponse, log, "validate"),
    )  # fmt: skip
    try:
        result = asyncio.run(run_lifecycle(call))
    except InternalError as exc:
        assert not valid
        assert exc.message == "response failed validation" and status_of(exc).name == "INTERNAL"
        assert log == ["handler", "validate", "catch"]
    else:
        assert valid and result == response
        assert log == ["handler", "validate", "after"]
