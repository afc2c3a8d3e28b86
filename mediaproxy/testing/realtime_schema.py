"""The OpenAI Realtime GA event schema, from the ``openai`` package's own pydantic models, for the
fake server and the dialect tests to hold both sides to the real protocol.

``openai`` and ``pydantic`` are imported on first use only, so a benchmark process that runs the
fake without validation does not need them.
"""

from __future__ import annotations

import functools
from typing import Any

# CLIENT_EVENT and SERVER_EVENT are built on first access (module __getattr__ below).
__all__ = ["adapters", "check_event", "server_event_types", "unknown_keys"]


@functools.cache
def adapters() -> tuple[Any, Any]:
    """The GA client and server event unions as pydantic ``TypeAdapter`` s (imports ``openai``)."""
    from typing import Annotated, Union, get_args

    from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
    from pydantic import Field, TypeAdapter

    client = get_args(get_args(RealtimeClientEvent)[0])  # strip the SDK's Annotated wrapper
    server = get_args(get_args(RealtimeServerEvent)[0])
    client_union: Any = Annotated[Union[client], Field(discriminator="type")]  # noqa: UP007
    server_union: Any = Annotated[Union[server], Field(discriminator="type")]  # noqa: UP007
    return TypeAdapter(client_union), TypeAdapter(server_union)


def server_event_types() -> frozenset[str]:
    """Every ``type`` of the GA server event union (importing ``openai``)."""
    from typing import get_args

    from openai.types.realtime import RealtimeServerEvent

    members = get_args(get_args(RealtimeServerEvent)[0])
    return frozenset(t for member in members for t in get_args(member.model_fields["type"].annotation))


def __getattr__(name: str) -> Any:
    """``CLIENT_EVENT`` / ``SERVER_EVENT``: the GA event unions as pydantic ``TypeAdapter`` s,
    built on first use (importing ``openai``)."""
    if name == "CLIENT_EVENT":
        return adapters()[0]
    if name == "SERVER_EVENT":
        return adapters()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def unknown_keys(model: Any, path: str = "$") -> list[str]:
    """Keys the models accepted only because they allow extras (misspelled or beta keys)."""
    from pydantic import BaseModel

    if isinstance(model, BaseModel):
        found = [f"{path}.{key}" for key in (model.model_extra or {})]
        for key, value in model:
            found += unknown_keys(value, f"{path}.{key}")
        return found
    if isinstance(model, (list, tuple)):
        return [k for i, v in enumerate(model) for k in unknown_keys(v, f"{path}[{i}]")]
    return []


def check_event(adapter: Any, event: Any) -> list[str]:
    """Problems with ``event`` against ``adapter``'s union; empty when it is valid GA."""
    from pydantic import ValidationError

    try:
        model = adapter.validate_python(event)
    except ValidationError as e:
        return [f"{err['loc']}: {err['msg']}" for err in e.errors()]
    return [f"unknown key {key}" for key in unknown_keys(model)]
