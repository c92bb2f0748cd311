"""urllib openers whose requests have a deadline, and whose proxies come from a given env.

Ground floor: imports nothing of venvseal.

- A request has an overall deadline, not only a timeout per read: urllib's ``timeout``
  bounds each ``recv``, so a server sending one byte every few seconds would hold a request
  forever. :class:`Clock` holds the deadline of the request being sent; every connection the
  opener makes for it (redirects included) checks it before each read, and each read waits
  at most what is left.
- Proxies come only from the allowlisted environment the caller passes in (``http_proxy``,
  ``https_proxy``, ``no_proxy`` in either case, and the CA bundle ``SSL_CERT_FILE``), never
  from ``os.environ`` behind the caller's back; loopback hosts never go through a proxy.
"""

from __future__ import annotations

import http.client
import io
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from venvseal import netutil

LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")


def hostname(host: str) -> str:
    """``host`` without its port (``[::1]:5000`` -> ``[::1]``, ``h:80`` -> ``h``)."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def is_local(host: str) -> bool:
    """True for the loopback hosts (with or without a port)."""
    return hostname(host) in LOCAL_HOSTS


def proxies_for(host: str, env: Mapping[str, str]) -> dict[str, str]:
    """The proxies (by scheme) for requests to ``host``: none for loopback or ``no_proxy``."""
    return {} if is_local(host) else netutil.proxies(env, host)


def ssl_context(env: Mapping[str, str]) -> ssl.SSLContext:
    """The default TLS context, with the CA bundle ``SSL_CERT_FILE`` of ``env`` if set."""
    return ssl.create_default_context(cafile=env.get("SSL_CERT_FILE") or None)


# Deadlines -------------------------------------------------------------------------------


@dataclass(slots=True)
class Clock:
    """The deadline (``time.monotonic()``) of the request being sent; None for no deadline.

    Mutable on purpose: a client sets it before each request (:meth:`start`), and the
    opener's connections read it when they connect, so redirects share their request's.
    """

    seconds: float | None = None  # the overall time one request may take
    deadline: float | None = field(default=None, init=False)

    def start(self) -> None:
        self.deadline = None if self.seconds is None else time.monotonic() + self.seconds


class DeadlineError(TimeoutError):
    """A request took longer than its deadline (an OSError, as socket timeouts are)."""


class _DeadlineReader(io.RawIOBase):
    """``owner``'s bytes, each ``recv`` waiting at most ``idle`` and never past the deadline."""

    def __init__(self, owner: _DeadlineSocket) -> None:
        super().__init__()
        self._owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        owner = self._owner
        wait = owner.idle
        if owner.deadline is not None:
            left = owner.deadline - time.monotonic()
            if left <= 0:
                raise DeadlineError(f"no complete answer within {owner.seconds:g} s")
            wait = left if wait is None else min(wait, left)
        owner.sock.settimeout(wait)
        try:
            return owner.sock.recv_into(buffer)
        except TimeoutError:
            if owner.deadline is not None and time.monotonic() >= owner.deadline:
                raise DeadlineError(f"no complete answer within {owner.seconds:g} s") from None
            raise

    def close(self) -> None:
        if not self.closed:
            self._owner.release()
        super().close()


class _DeadlineSocket:
    """A connected socket whose ``makefile('rb')`` (what http.client reads) keeps a deadline.

    Like a socket's own files, a reader keeps the socket open after ``close()`` until it is
    closed too (urllib closes the connection's socket as soon as the headers are read).
    """

    def __init__(self, sock: socket.socket, clock: Clock, idle: float | None) -> None:
        self.sock, self.deadline, self.seconds, self.idle = (
            sock, clock.deadline, clock.seconds, idle)
        self._readers = 0
        self._closing = False

    def makefile(self, mode: str = "r", *_args: Any, **_kwargs: Any) -> io.BufferedReader:
        if mode != "rb":
            raise ValueError(f"only binary reads are supported, not mode {mode!r}")
        self._readers += 1
        return io.BufferedReader(_DeadlineReader(self))

    def release(self) -> None:
        self._readers -= 1
        self._close_if_done()

    def close(self) -> None:
        self._closing = True
        self._close_if_done()

    def _close_if_done(self) -> None:
        if self._closing and self._readers <= 0:
            self.sock.close()

    def __getattr__(self, name: str) -> Any:  # sendall, settimeout, ...
        return getattr(self.sock, name)


class _DeadlineConnection:
    """Mixed into http.client's connections: connect within, and read under, the deadline."""

    clock: Clock
    sock: Any
    timeout: Any

    def connect(self) -> None:
        idle = self.timeout if isinstance(self.timeout, (int, float)) else None
        if self.clock.deadline is not None:
            left = self.clock.deadline - time.monotonic()
            if left <= 0:
                raise DeadlineError(f"no complete answer within {self.clock.seconds:g} s")
            self.timeout = left if idle is None else min(idle, left)
        super().connect()  # type: ignore[misc]  # http.client's, next in the MRO
        self.sock = _DeadlineSocket(self.sock, self.clock, idle)


class _HTTPConnection(_DeadlineConnection, http.client.HTTPConnection):
    def __init__(self, *args: Any, clock: Clock, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock


class _HTTPSConnection(_DeadlineConnection, http.client.HTTPSConnection):
    def __init__(self, *args: Any, clock: Clock, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self._clock = clock

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPConnection, req, clock=self._clock)  # type: ignore[arg-type]


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, clock: Clock, context: ssl.SSLContext | None) -> None:
        super().__init__(context=context)
        self._clock, self._ctx = clock, context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPSConnection, req,  # type: ignore[arg-type]
                            context=self._ctx, clock=self._clock)


def build_opener(host: str, env: Mapping[str, str], clock: Clock, *,
                 context: ssl.SSLContext | None = None,
                 extra: Iterable[urllib.request.BaseHandler] = ()
                 ) -> urllib.request.OpenerDirector:
    """An opener for ``host`` using ``env``'s proxies only, whose requests keep ``clock``."""
    return urllib.request.build_opener(
        urllib.request.ProxyHandler(proxies_for(host, env)), _HTTPHandler(clock),
        _HTTPSHandler(clock, context or ssl_context(env)), *extra)
