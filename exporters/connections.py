"""How the HTTP endpoint keeps idle and slow clients from crowding out a scraper: uvicorn's
h11 protocol with a connection cap (evicting the longest-idle connection first) and a
deadline for each request's headers (``exporters.http`` serves with it)."""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.h11_impl import H11Protocol

from pgproof.exporters.settings import HttpLimits

log = logging.getLogger("pgproof.http")


def limited_protocol(limits: HttpLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a connection cap and a header deadline. At the cap, the
    connection idle the longest (no request in progress: kept alive, or still sending its
    headers) is closed to make room; only when every connection is being served is the new
    one refused. So idle or slow clients can never lock a scraper out."""
    order: dict[H11Protocol, None] = {}  # open connections, least recently active first

    class Protocol(H11Protocol):
        _rejected = False
        _deadline: asyncio.TimerHandle | None = None

        def _busy(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(order) >= limits.max_connections and not _evict_one():
                self._rejected = True
                self.transport = transport
                log.debug("connection refused: %d connections busy", len(order))
                transport.abort()
                return
            super().connection_made(transport)
            order[self] = None
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(
                limits.header_timeout_seconds, self._headers_too_slow
            )

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _headers_too_slow(self) -> None:
            self._deadline = None
            if not self._busy():
                log.debug("closing a connection whose request did not arrive in time")
                self.transport.abort()

        def handle_events(self) -> None:
            super().handle_events()
            if self._busy():
                self._disarm()  # a request is being served: its headers are in

        def on_response_complete(self) -> None:
            super().on_response_complete()
            order.pop(self, None)
            if not self.transport.is_closing():
                order[self] = None  # most recently active now
                self._arm()  # the next request has the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            order.pop(self, None)
            if self._rejected:
                return
            super().connection_lost(exc)

    def _evict_one() -> bool:
        for victim in order:
            if not victim._busy():  # type: ignore[attr-defined]
                order.pop(victim)
                log.debug("connection limit reached: closing the longest idle connection")
                victim.transport.abort()
                return True
        return False

    return Protocol
