"""The opt-in Prometheus endpoint of `facesieve watch` (`[metrics] address`).

Each Guard has its own CollectorRegistry, never the process-global one: two
guards in one process (the tests) must not share counters, and the endpoint
shows facesieve's figures only, not the client library's process collectors.
Recording is cheap and thread-safe; the worker thread records, the endpoint's
own thread serves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ..acting.apply import Outcome
from ..config import MetricsConfig, split_address
from ..judging.judge import Status
from ..judging.policy import Verdict

__all__ = ["Metrics"]

_VERDICTS = tuple(verdict.value for verdict in Verdict)
# Seconds per image: ~20 ms for a small crop up to seconds for a large photo on a busy CPU.
_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The daemon's figures, and the HTTP endpoint that serves them."""

    def __init__(self, queue_depth: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "facesieve_decisions",
            "Files judged, acted on and recorded, by verdict.",
            ["verdict"],
            registry=self.registry,
        )
        for verdict in _VERDICTS:
            self.decisions.labels(verdict=verdict)  # present at 0 before the first file
        self.errors = Counter(
            "facesieve_errors",
            "Files that could not be judged or acted on (left where they were).",
            registry=self.registry,
        )
        self.processing = Histogram(
            "facesieve_processing_seconds",
            "Time to read, decode, judge and act on one file.",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "facesieve_queue_depth",
            "Paths waiting in the queue between the observer and the worker.",
            registry=self.registry,
        )
        self.queue_depth.set_function(lambda: float(queue_depth()))
        self.last_decision = Gauge(
            "facesieve_last_decision_timestamp_seconds",
            "Unix time of the latest decision (0: none since start).",
            registry=self.registry,
        )
        self.model_load = Gauge(
            "facesieve_model_load_seconds",
            "How long loading and warming the models took at start.",
            registry=self.registry,
        )
        self.unwatched = Gauge(
            "facesieve_unwatched_folders",
            "Folders in the inbox that inotify could not watch (kernel watch limit): "
            "polled every poll_interval instead.",
            registry=self.registry,
        )
        self.watch_audit = Gauge(
            "facesieve_watch_audit_available",
            "1 while the daemon can tell which inbox folders inotify watches; 0: it cannot "
            "(watchdog changed), so folders past the watch limit go unnoticed.",
            registry=self.registry,
        )
        self.watch_audit.set(1)
        self.watch_failures = Counter(
            "facesieve_watch_failures",
            "Folders for which adding an inotify watch failed.",
            registry=self.registry,
        )
        self.ignored = Gauge(
            "facesieve_ignored_files",
            "Files with an ignored name still in progress (not yet quiet for "
            "ignore_stale_seconds), as the last reconciliation pass found them.",
            registry=self.registry,
        )
        self.arrivals_deferred = Counter(
            "facesieve_arrivals_deferred",
            "Arrived folders whose walk was cut short by the per-tick budget and left "
            "to a reconciliation pass.",
            registry=self.registry,
        )
        self.observer_deaths = Counter(
            "facesieve_observer_deaths",
            "Times a thread of the inbox observer was found dead: each is logged "
            "(observer_died) and the observer restarted, the inbox walked again.",
            registry=self.registry,
        )
        self.watching = Gauge(
            "facesieve_watching",
            "1 while the inbox observer runs; 0 while it is down (being restarted, "
            "or the inbox is gone): arrivals then wait for the next reconciliation pass.",
            registry=self.registry,
        )
        self.watching.set(1)
        self.slow_lane = Gauge(
            "facesieve_slow_lane_files",
            "Files set aside as slow (sparse, or over images.first_decode_seconds), "
            "judged with the whole decode budget when the queue is idle.",
            registry=self.registry,
        )
        self._server: Any = None
        self._thread: Any = None

    def observe(self, outcome: Outcome) -> None:
        """Count one outcome of the engine (the worker thread)."""
        if outcome.status is Status.DECIDED and outcome.verdict is not None:
            self.decisions.labels(verdict=outcome.verdict.value).inc()
            self.processing.observe(outcome.elapsed_ms / 1000)
            self.last_decision.set(time.time())
        elif outcome.status is Status.ERROR:
            self.errors.inc()

    def models_loaded(self, seconds: float) -> None:
        self.model_load.set(seconds)

    def serve(self, config: MetricsConfig) -> str:
        """Start serving /metrics on the configured address; returns it as host:port.

        Raises:
            OSError: the address cannot be bound (in use, not local).
        """
        host, port = split_address(config.address)
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self._thread.name = "facesieve-metrics"
        port = self._server.server_address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5.0)
            self._server = self._thread = None
