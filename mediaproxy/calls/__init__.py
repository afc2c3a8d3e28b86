"""The call lifecycle, in one place: :class:`CallBridge` (one call) and :class:`CallRegistry`
(admission, capacity, hold for resume, take-over, drain)."""

from mediaproxy.calls.bridge import CallBridge
from mediaproxy.calls.context import CallContext, Endpoint
from mediaproxy.calls.leg import PlatformLeg
from mediaproxy.calls.registry import CallRegistry
from mediaproxy.outcome import Outcome

__all__ = ["CallBridge", "CallContext", "CallRegistry", "Endpoint", "Outcome", "PlatformLeg"]
