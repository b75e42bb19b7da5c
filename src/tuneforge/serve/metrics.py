"""Prometheus metrics of one server (its own registry, so that several servers in one process stay apart)."""

from __future__ import annotations

from typing import Any


class ServerMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self._requests = Counter("tuneforge_requests", "API requests by model, endpoint and HTTP status",
                                 ["model", "endpoint", "status"], registry=self.registry)
        self._latency = Histogram("tuneforge_request_seconds", "API request latency (to the last byte for non-streamed"
                                  " responses, to the first for streams)", ["model", "endpoint"],
                                  registry=self.registry,
                                  buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self._tokens = Counter("tuneforge_tokens", "Prompt and completion tokens by model", ["model", "kind"],
                               registry=self.registry)
        self._queue = Gauge("tuneforge_queue_depth", "Generation requests waiting, per model copy", ["engine"],
                            registry=self.registry)
        self._cancelled = Gauge("tuneforge_cancelled_rows", "Rows dropped mid-generation because the client left",
                                ["engine"], registry=self.registry)
        self._batch = Histogram("tuneforge_batch_size", "Requests generated together, per model copy", ["engine"],
                                registry=self.registry, buckets=(1, 2, 4, 8, 16, 32))
        self._drift = Gauge("tuneforge_drift_signal", "The last complete window's drift and quality signals, per "
                            "model (tuneforge serve --monitor)", ["model", "signal"], registry=self.registry)
        self._alerts = Counter("tuneforge_alerts", "Alerts raised by the monitor rules", ["model", "rule"],
                               registry=self.registry)
        self._log_failures = Counter("tuneforge_log_failures", "Requests the prediction log could not take (answered "
                                     "all the same)", ["model"], registry=self.registry)
        self._logged = Counter("tuneforge_logged_requests", "Requests written to the prediction log", ["model"],
                               registry=self.registry)

    def request(self, model: str, endpoint: str, status: int, seconds: float) -> None:
        self._requests.labels(model, endpoint, str(status)).inc()
        self._latency.labels(model, endpoint).observe(seconds)

    def tokens(self, model: str, prompt: int, completion: int) -> None:
        self._tokens.labels(model, "prompt").inc(prompt)
        self._tokens.labels(model, "completion").inc(completion)

    def queue(self, engine: str, depth: int, cancelled: int = 0) -> None:
        self._queue.labels(engine).set(depth)
        self._cancelled.labels(engine).set(cancelled)

    def batch(self, engine: str, size: int) -> None:
        self._batch.labels(engine).observe(size)

    def drift(self, model: str, signals: dict[str, float | None]) -> None:
        """The last window's signals; one it could not read is NaN (not the value of an older window)."""
        for name, value in signals.items():
            self._drift.labels(model, name).set(float("nan") if value is None else value)

    def log_failure(self, model: str) -> None:
        self._log_failures.labels(model).inc()

    def alert(self, model: str, rule: str) -> None:
        self._alerts.labels(model, rule).inc()

    def logged(self, model: str, count: int = 1) -> None:
        self._logged.labels(model).inc(count)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def value(self, name: str, **labels: Any) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0
