"""Slow and surplus connections to the HTTP server: a header deadline, a connection limit,
and one log line per burst of refusals.

aiohttp's server has no header read timeout: a client that sends half a request line and then
nothing holds its connection (and a file descriptor) for ever, and 1,100 of them made the bot
refuse Slack and fill its log with "Too many open files". Here each connection is one request
(`Connection: close` on every response, so no idle keep-alive connection can be reused for a
slow second request), must deliver its request headers within `header_timeout` of connecting
or is closed, and at most `max_connections` are open: a connection past the limit first closes
the oldest one still sending its headers (a slow client loses its place to a fresh one, so a
flood of half-sent requests cannot lock Slack out), and is refused only when every open
connection is busy with a request. Refusals are logged once when a burst starts and once with
the count when it is over, never per connection. The body's deadline is the handler's
(bot/web.py, `BODY_TIMEOUT`).

aiohttp has no hook for this, so the server's protocol factory is wrapped (`GuardedSite`): a
small proxy sees the bytes before aiohttp's handler does and only looks for the end of the
headers (`\\r\\n\\r\\n`).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import OrderedDict
from typing import Any, cast

from aiohttp import web

log = logging.getLogger(__name__)

HEADER_TIMEOUT = 10.0
MAX_HEADER_BYTES = 64 * 1024  # aiohttp refuses longer header lines itself; this bounds the scan
BURST_QUIET = 5.0  # seconds without a refusal that end a burst
FD_RESERVE = 256  # descriptors kept for the database, RabbitMQ, Slack and logs


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (many systems start at 1,024, which a
    few hundred slow clients exhaust); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    log.info("raised the open-file limit from %d to %d", soft, target)
    return target


def default_max_connections() -> int:
    """What the open-file limit allows, less a reserve, and at most 10,000."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return max(16, min(10_000, soft - FD_RESERVE))


class ConnectionGuard:
    """The open connections of one server, oldest first, and the refusal burst."""

    def __init__(self, max_connections: int, header_timeout: float) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.open: OrderedDict[_Guarded, None] = OrderedDict()
        self.refused = 0  # in the burst under way
        self.refused_total = 0
        self.evicted_total = 0
        self.timed_out_total = 0
        self._burst_end: asyncio.TimerHandle | None = None

    def admit(self, conn: _Guarded) -> bool:
        if len(self.open) >= self.max_connections:
            slow = next((c for c in self.open if not c.headers_done), None)
            if slow is None:
                self._refuse()
                return False
            self.evicted_total += 1
            slow.close()  # leaves `open` in its connection_lost
            self.open.pop(slow, None)
        self.open[conn] = None
        return True

    def left(self, conn: _Guarded) -> None:
        self.open.pop(conn, None)

    def _refuse(self) -> None:
        self.refused += 1
        self.refused_total += 1
        loop = asyncio.get_running_loop()
        if self._burst_end is None:
            log.warning(
                "refusing connections: %d open, all busy (limit %d)",
                len(self.open),
                self.max_connections,
            )
        else:
            self._burst_end.cancel()
        self._burst_end = loop.call_later(BURST_QUIET, self._end_burst)

    def _end_burst(self) -> None:
        log.warning("refused %d connections in the last burst", self.refused)
        self.refused = 0
        self._burst_end = None


class _Guarded(asyncio.Protocol):
    """Proxy in front of aiohttp's RequestHandler for one connection."""

    def __init__(self, guard: ConnectionGuard, inner: Any) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.headers_done = False
        self._seen = b""  # the tail of what came so far, to find the end of the headers
        self._size = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio types a Protocol's transport as the base class; a stream's is a Transport
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        if not self.guard.admit(self):
            transport.abort()
            return
        self._admitted = True
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.guard.header_timeout, self._too_slow)
        self.inner.connection_made(transport)

    def _too_slow(self) -> None:
        if not self.headers_done:
            self.guard.timed_out_total += 1
            self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if not self.headers_done:
            self._size += len(data)
            window = self._seen + data
            if b"\r\n\r\n" in window:
                self.headers_done = True
                if self._deadline is not None:
                    self._deadline.cancel()
            elif self._size > MAX_HEADER_BYTES:
                self.close()
                return
            else:
                self._seen = window[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self._admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self.guard.left(self)
        if self._admitted:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class GuardedSite(web.TCPSite):
    """TCPSite whose connections go through a ConnectionGuard."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        max_connections: int | None = None,
        header_timeout: float = HEADER_TIMEOUT,
    ) -> None:
        super().__init__(runner, host, port)
        self.guard = ConnectionGuard(max_connections or default_max_connections(), header_timeout)

    async def start(self) -> None:
        # What TCPSite.start does (register with the runner, then create_server), with the
        # protocol factory wrapped.
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        guard = self.guard
        self._server = await loop.create_server(
            lambda: _Guarded(guard, server()),
            self._host,
            self._port,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
            backlog=self._backlog,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]


def close_after_response(app: web.Application) -> None:
    """One request per connection (see the module docstring): every response, errors
    included, says `Connection: close` (a middleware: a response-prepare signal runs after the
    headers are made)."""

    @web.middleware
    async def one_request(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.force_close()
            raise
        response.force_close()
        return response

    app.middlewares.append(one_request)
