"""The platform listener that several workers share: bound once by the supervisor, adopted by
each worker (``reactor.adoptStreamPort``), so the kernel hands each new connection to whichever
worker accepts it first and no worker can hold the port alone.

:func:`listen_spec` reads a ``tcp:``/``tcp6:``/``ssl:`` endpoint string the way Twisted's own
parsers do (so every option they accept means the same here) by letting the endpoint "listen" on
a recording stand-in for the reactor: the port, interface, backlog and, for ``ssl:``, the TLS
context factory it would have used. A worker wraps its site in that TLS (``TLSMemoryBIOFactory``,
what ``listenSSL`` does itself), so ``ssl:`` listeners work with workers too.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IProtocolFactory
from twisted.protocols.tls import TLSMemoryBIOFactory


@dataclass(frozen=True)
class ListenSpec:
    """Where a stream endpoint listens: ``port`` (0: any), ``interface`` (empty: all),
    ``backlog``, and the TLS context factory of an ``ssl:`` endpoint (None: plain TCP)."""

    port: int
    interface: str
    backlog: int
    tls: Any = None

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.interface else socket.AF_INET

    def wrap(self, factory: IProtocolFactory) -> IProtocolFactory:
        """``factory`` as this listener serves it: inside TLS for an ``ssl:`` endpoint."""
        if self.tls is None:
            return factory
        return TLSMemoryBIOFactory(self.tls, False, factory)


class _RecordingReactor:
    """Takes the one ``listenTCP``/``listenSSL`` call an endpoint makes and remembers it."""

    def __init__(self) -> None:
        self.spec: ListenSpec | None = None

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> None:  # noqa: N802
        self.spec = ListenSpec(port, interface, backlog)

    def listenSSL(self, port: int, factory: Any, contextFactory: Any, backlog: int = 50,  # noqa: N802,N803
                  interface: str = "") -> None:
        self.spec = ListenSpec(port, interface, backlog, contextFactory)


def listen_spec(description: str) -> ListenSpec:
    """The :class:`ListenSpec` of a ``tcp:``, ``tcp6:`` or ``ssl:`` endpoint string; ValueError
    for any other kind (config validation refuses those with workers)."""
    recorder = _RecordingReactor()
    endpoint = serverFromString(recorder, description)
    try:
        endpoint.listen(_NoFactory()).addErrback(lambda _: None)
    except AttributeError:  # it wanted another reactor method (listenUNIX, adoptStreamPort, ...)
        pass
    if recorder.spec is None:
        raise ValueError(f"{description!r} is not a tcp: or ssl: endpoint")
    return recorder.spec


class _NoFactory:
    """The factory handed to the recording listen (never used: nothing is bound)."""


def bind(spec: ListenSpec) -> socket.socket:
    """A listening socket for ``spec`` (SO_REUSEADDR, as Twisted's own ports), not inherited by
    children except where a spawn maps it explicitly."""
    sock = socket.socket(spec.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((spec.interface or ("::" if spec.family == socket.AF_INET6 else ""), spec.port))
        sock.listen(spec.backlog)
        # Every process that adopts it reads it from its reactor.
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
