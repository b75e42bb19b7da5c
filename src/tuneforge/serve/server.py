"""``tuneforge serve``: run folders behind the HTTP API, on uvicorn. The server answers /health at once and loads
the models in the background (503 until /ready); on SIGINT/SIGTERM it stops taking requests, lets those in
flight finish, and stops the generation workers."""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.serve.limits import Limits

KEYS_ENV = "TUNEFORGE_API_KEYS"  # comma-separated API keys, when no key file is given


def read_keys(key_file: str | Path | None) -> list[str]:
    """API keys, one per line of ``key_file`` (blank lines and # comments skipped), else from $TUNEFORGE_API_KEYS.
    No keys: the API is open (fine on loopback)."""
    if key_file is not None:
        path = Path(key_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UserError(f"{path}: cannot read the API key file ({exc.strerror})") from None
        keys = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        if not keys:
            raise UserError(f"{path}: no API keys in the file (one per line)")
        return keys
    return [key.strip() for key in os.environ.get(KEYS_ENV, "").split(",") if key.strip()]


@dataclass
class Server:
    """A running server: ``url``, ``state`` (catalog, metrics), ``wait_ready()``, ``stop()``."""

    run_dirs: list[str]
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    keys: list[str] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    precision: str | None = None
    max_batch: int = 8
    max_wait: float = 0.01
    log_db: str | None = None  # the prediction log: an SQLite file or postgresql://...; None: no log
    log_text: bool = True  # keep each input's text in the log (retraining needs it), else only its hash and length
    monitor: Any = None  # a MonitorConfig: check each completed window of the labelling runs as traffic comes
    say: Any = print
    state: Any = None
    _server: Any = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def app(self) -> Any:
        from tuneforge.serve.app import State, create_app
        from tuneforge.serve.metrics import ServerMetrics

        self.state = State(limits=self.limits, keys=self.keys, metrics=ServerMetrics())
        return create_app(self.state)

    def load(self) -> None:
        """Load the models (the server answers 503 meanwhile); a failure is kept for /ready and every request."""
        from tuneforge.serve.catalog import load_catalog

        try:
            catalog = load_catalog(self.run_dirs, self.precision, self.max_batch, self.max_wait,
                                   self.limits.max_queue, on_batch=self.state.metrics.batch)
            if self.log_db:
                self.state.recorder = self._recorder(catalog)
            self.state.catalog = catalog
        except Exception as exc:  # noqa: BLE001 - reported through /ready and 503s, and re-raised by wait_ready
            self.state.load_error = f"{type(exc).__name__}: {exc}"

    def _recorder(self, catalog: Any) -> Any:
        from tuneforge.monitor.embed import Embedder
        from tuneforge.monitor.log import PredictionLog
        from tuneforge.serve.watch import Recorder

        watched = {name: served.source for name, served in catalog.models.items()
                   if served.task.monitored and served.generator is None}
        if self.monitor is not None and self.monitor.window_requests is None:
            self.say("warning: the live monitor cuts windows by requests (window_requests); with window_minutes, "
                     "run tuneforge monitor check from cron instead")
        return Recorder(PredictionLog(self.log_db), Embedder(), self.state.metrics, self.log_text, self.monitor,
                        watched, self.say)

    def start(self) -> Server:
        """Serve in a background thread (tests, notebooks); returns once the port is listening."""
        import uvicorn

        if self.port == 0:
            self.port = free_port(self.host)
        app = self.app()
        self._server = uvicorn.Server(uvicorn.Config(app, host=self.host, port=self.port, log_level="warning",
                                                     timeout_graceful_shutdown=30))
        self._thread = threading.Thread(target=self._server.run, name="tuneforge-serve", daemon=True)
        self._thread.start()
        threading.Thread(target=self.load, name="tuneforge-load", daemon=True).start()
        deadline = time.time() + 30
        while not self._server.started:
            if time.time() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def wait_ready(self, timeout: float = 600) -> Server:
        deadline = time.time() + timeout
        while self.state.catalog is None:
            if self.state.load_error:
                raise UserError(f"the models failed to load: {self.state.load_error}")
            if time.time() > deadline:
                raise TimeoutError(f"models not loaded after {timeout:.0f} s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Stop taking requests, let those in flight finish, stop the workers."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self.state is not None and self.state.catalog is not None:
            self.state.catalog.close()
        if self.state is not None and self.state.recorder is not None:
            self.state.recorder.close()

    def __enter__(self) -> Server:
        return self if self._server is not None else self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve(run_dirs: list[str | Path], host: str = "127.0.0.1", port: int = 0, api_keys: list[str] | None = None,
          limits: Limits | None = None, precision: str | None = None, max_batch: int = 8,
          max_wait: float = 0.01, log_db: str | Path | None = None, log_text: bool = True,
          monitor: Any = None, say: Any = print) -> Server:
    """Start a server for ``run_dirs`` in the background; ``server.wait_ready()`` waits for the models."""
    return Server([str(d) for d in run_dirs], host, port, list(api_keys or []), limits or Limits(), precision,
                  max_batch, max_wait, str(log_db) if log_db else None, log_text, monitor, say).start()


def run_forever(server: Server, log: Any = print) -> None:
    """The CLI: serve in the foreground until SIGINT/SIGTERM (uvicorn's graceful shutdown)."""
    import uvicorn

    app = server.app()
    if server.host not in ("127.0.0.1", "localhost", "::1") and not server.keys:
        log(f"warning: serving on {server.host} without API keys: anyone who can reach it can use it "
            f"(--api-key-file F or ${KEYS_ENV})")
    log(f"loading {len(server.run_dirs)} run(s); serving on {server.url} (GET /ready says when the models are in)")
    loader = threading.Thread(target=_load_and_report, args=(server, log), daemon=True)
    loader.start()
    try:
        uvicorn.run(app, host=server.host, port=server.port, log_level="warning", timeout_graceful_shutdown=30)
    finally:
        if server.state.catalog is not None:
            server.state.catalog.close()
        if server.state.recorder is not None:
            server.state.recorder.close()


def _load_and_report(server: Server, log: Any) -> None:
    started = time.time()
    server.load()
    if server.state.load_error:
        log(f"error: the models failed to load: {server.state.load_error}")
        return
    models = server.state.catalog.models
    log(f"ready in {time.time() - started:.0f} s: " + ", ".join(f"{name} ({served.kind})"
                                                               for name, served in sorted(models.items())))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
