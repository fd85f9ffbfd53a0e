"""/metrics: concurrent scrapes share one collection, none gets data older than its arrival."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from pgproof.exporters.http import Request
from pgproof.exporters.scrape import metrics_handler


class Slow(Collector):
    def __init__(self) -> None:
        self.collections = 0
        self.value = 0.0

    def collect(self) -> Iterator[Metric]:
        self.collections += 1
        time.sleep(0.2)
        yield GaugeMetricFamily("pgproof_test_value", "a value", value=self.value)


def test_a_crowd_shares_collections_and_nobody_gets_stale_data() -> None:
    slow = Slow()
    registry = CollectorRegistry()
    registry.register(slow)
    handle = metrics_handler(registry)
    request = Request("/metrics", "", {})
    slow.collections = 0  # registering collected once
    bodies: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: bodies.append(handle(request).body)) for _ in range(40)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(bodies) == 40 and slow.collections <= 3, slow.collections
    slow.value = 7.0
    assert b"pgproof_test_value 7.0" in handle(request).body  # a later scrape: fresh data
