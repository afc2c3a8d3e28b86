"""Test doubles shipped with the package, for its tests and benchmarks (like
``twisted.internet.testing``). Production code never imports this package."""

from __future__ import annotations

from mediaproxy.testing.waiting import ConditionWaiting

__all__ = ["ConditionWaiting"]
