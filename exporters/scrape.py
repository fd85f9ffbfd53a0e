"""``/metrics``: the Prometheus exposition of a registry, for the HTTP endpoint."""

from __future__ import annotations

import re
import threading
import time

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from pgproof.exporters.http import Handler, Request, Response

_VERSION = re.compile(r"""version\s*=\s*"?([^";,\s]*)""", re.I)


def usable_accept(accept: str) -> str:
    """The Accept header, or "" (the text format) when it names a version that is not a
    dotted number: prometheus_client would fail on it (a client's typo is no server error)."""
    for found in _VERSION.finditer(accept):
        if not re.fullmatch(r"\d+(\.\d+)*", found.group(1)):
            return ""
    return accept


def metrics_handler(registry: CollectorRegistry) -> Handler:
    """``/metrics``: one collection at a time, and scrapes that arrive while one runs share
    the next (which starts after they arrived: never older data than a scrape of its own
    would give). A flood of scrapes cannot become a flood of repository reads and source
    queries; a lone scrape is collected as it comes."""
    done = threading.Condition()
    busy = False
    newest: dict[str, tuple[float, Response]] = {}  # content type -> (collection start, answer)

    def handle(request: Request) -> Response:
        nonlocal busy
        arrived = time.monotonic()
        try:
            encoder, content_type = choose_encoder(usable_accept(request.headers.get("accept", "")))
        except ValueError:  # anything else it cannot read: the text format
            encoder, content_type = choose_encoder("")
        with done:
            while True:
                got = newest.get(content_type)
                if got is not None and got[0] >= arrived:
                    return got[1]  # collected after this scrape arrived
                if not busy:
                    busy = True
                    break
                done.wait()
        started = time.monotonic()
        response = None
        try:
            response = Response(200, content_type, encoder(registry))
            return response
        finally:
            with done:
                busy = False
                if response is not None:
                    newest[content_type] = (started, response)
                done.notify_all()

    return handle
