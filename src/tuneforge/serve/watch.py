"""What the server keeps of its traffic: each request written to the prediction log (with its input embedding), the
feedback attached to it, and, with a monitor config, each completed window of a watched model checked against its
run's reference (the signals as gauges on /metrics, the rules' alerts logged, posted and counted)."""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tuneforge.monitor.log import Prediction, PredictionLog, describe_input


@dataclass
class Recorder:
    log: PredictionLog
    embedder: Any  # monitor.embed.Embedder, or None: no embeddings
    metrics: Any  # ServerMetrics
    keep_text: bool = True
    monitor: Any = None  # config.monitor.MonitorConfig: check windows as they complete
    run_dirs: dict[str, str] = field(default_factory=dict)  # model name -> run folder (labelling runs)
    say: Callable[[str], None] = print
    started: float = field(default_factory=time.time)  # the live watcher reads traffic from here on
    failures: int = 0  # requests the log could not take (each also a warning line)
    _counts: dict[str, int] = field(default_factory=dict)
    _last: dict[str, tuple[float, str]] = field(default_factory=dict)  # the last row checked, per model
    _series: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _references: dict[str, Any] = field(default_factory=dict)
    _jobs: queue.Queue[str | None] = field(default_factory=queue.Queue)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _worker: threading.Thread | None = None

    def record_labels(self, model: str, endpoint: str, texts: list[str], results: list[dict[str, Any]],
                      seconds: float) -> list[str] | None:
        """One row per text of a labelling request; returns their ids (for POST /v1/feedback), or None when the log
        failed (the request is still answered: a warning line and ``tuneforge_log_failures`` say so)."""
        try:
            return self._record_labels(model, endpoint, texts, results, seconds)
        except Exception as exc:  # noqa: BLE001 - a broken log must not fail the request it records
            self._failed(model, exc)
            return None

    def _failed(self, model: str, exc: Exception) -> None:
        self.failures += 1
        self.metrics.log_failure(model)
        self.say(f"warning: the prediction log did not take a {model} request ({type(exc).__name__}: {exc})")

    def _record_labels(self, model: str, endpoint: str, texts: list[str], results: list[dict[str, Any]],
                       seconds: float) -> list[str]:
        vectors = self.embedder.embed(texts) if self.embedder is not None else [None] * len(texts)
        ids = []
        for text, result, vector in zip(texts, results, vectors):
            probabilities = result.get("probabilities")
            ids.append(self.log.add(Prediction(
                model=model, endpoint=endpoint, **describe_input(text, self.keep_text),
                embedding=None if vector is None else vector.tobytes(), prediction=result.get("label"),
                confidence=max(probabilities.values()) if probabilities else None,
                probabilities=json.dumps(probabilities) if probabilities else None,
                latency_ms=round(seconds * 1000 / len(texts), 2))))
        self._logged(model, len(texts))
        return ids

    def record_generation(self, model: str, endpoint: str, ident: str, prompt: str, output_tokens: int,
                          seconds: float) -> None:
        try:
            vector = self.embedder.embed([prompt])[0].tobytes() if self.embedder is not None else None
            self.log.add(Prediction(model=model, endpoint=endpoint, **describe_input(prompt, self.keep_text),
                                    embedding=vector, output_tokens=output_tokens,
                                    latency_ms=round(seconds * 1000, 2), id=ident))
            self._logged(model, 1)
        except Exception as exc:  # noqa: BLE001 - a broken log must not fail the request it records
            self._failed(model, exc)

    def _logged(self, model: str, count: int) -> None:
        self.metrics.logged(model, count)
        if self.monitor is None or self.monitor.window_requests is None or model not in self.run_dirs:
            return
        with self._lock:
            before = self._counts.get(model, 0)
            self._counts[model] = before + count
            completed = (before + count) // self.monitor.window_requests - before // self.monitor.window_requests
            for _ in range(completed):
                self._jobs.put(model)
            if completed and self._worker is None:
                self._worker = threading.Thread(target=self._watch, name="tuneforge-monitor", daemon=True)
                self._worker.start()

    def _watch(self) -> None:
        while True:
            model = self._jobs.get()
            try:
                if model is None:
                    return
                self._check_window(model)
            except Exception as exc:  # noqa: BLE001 - the monitor must never take the server down
                self.say(f"warning: the monitor could not check {model}'s last window ({type(exc).__name__}: {exc})")
            finally:
                self._jobs.task_done()

    def _check_window(self, model: str) -> None:
        from tuneforge.monitor.alerts import deliver, evaluate
        from tuneforge.monitor.reference import load_reference
        from tuneforge.monitor.signals import window_signals

        if model not in self._references:
            self._references[model] = load_reference(self.run_dirs[model], embedder=self.embedder, log=self.say)
        series = self._series.setdefault(model, [])
        window = self.log.rows(model, after=self._last.get(model, (self.started, "")),
                               limit=self.monitor.window_requests)  # this server's traffic, window after window
        if not window:
            return
        self._last[model] = (window[-1]["ts"], window[-1]["id"])
        signals, intervals = window_signals(window, self._references[model], self.monitor,
                                            seed=self.monitor.seed + len(series))
        series.append({"window": len(series), "start": window[0]["ts"], "end": window[-1]["ts"], "rows": len(window),
                       "signals": signals, "intervals": intervals})
        self.metrics.drift(model, signals)
        fresh = [alert for alert in evaluate(series, self.monitor.rules) if alert["window"] == len(series) - 1]
        for alert in fresh:
            self.metrics.alert(model, alert["rule"])
        deliver(fresh, model, self.monitor.webhook, self.say)

    def idle(self, timeout: float = 60) -> None:
        """Wait until the windows queued so far are checked (tests, benchmarks)."""
        import time

        deadline = time.time() + timeout
        while self._jobs.unfinished_tasks:
            if time.time() > deadline:
                raise TimeoutError("the monitor is still checking windows")
            time.sleep(0.05)

    def close(self) -> None:
        if self._worker is not None:
            self._jobs.put(None)
            self._worker.join(timeout=30)
        self.log.close()
