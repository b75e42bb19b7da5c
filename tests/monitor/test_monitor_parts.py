"""The monitor's parts on their own, fast: the prediction log (SQLite and a real PostgreSQL), windows, alert rules
(consecutive windows, cooldown), the webhook (a real local HTTP server), the config's one-line errors, the page."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest

from tuneforge.config.monitor import AlertRule, MonitorConfig, load_monitor_config
from tuneforge.errors import ConfigError, UserError
from tuneforge.monitor.alerts import deliver, evaluate
from tuneforge.monitor.log import Prediction, PredictionLog, describe_input, open_log
from tuneforge.monitor.reference import Reference
from tuneforge.monitor.signals import cut_windows, signal_series

EXAMPLE = Path(__file__).parents[2] / "examples" / "monitor.yaml"


def _prediction(text: str, label: str = "a", ts: float | None = None, vector: np.ndarray | None = None) -> Prediction:
    extra = {"ts": ts} if ts is not None else {}
    return Prediction(model="m", endpoint="/v1/classify", **describe_input(text), prediction=label, confidence=0.9,
                      probabilities=json.dumps({"a": 0.9, "b": 0.1}), latency_ms=3.0,
                      embedding=None if vector is None else vector.astype(np.float32).tobytes(), **extra)


def _exercise(log: PredictionLog) -> None:
    vector = np.arange(4, dtype=np.float32)
    ids = [log.add(_prediction(f"text {i}", ts=1000.0 + i, vector=vector)) for i in range(12)]
    assert log.feedback(ids[3], label="b") and log.feedback(ids[3], rating=4.0)
    assert not log.feedback("req-missing", label="a")
    rows = log.rows("m")
    assert [row["id"] for row in rows] == ids  # time order
    assert rows[3]["label"] == "b" and rows[3]["rating"] == 4.0  # a rating later keeps the label
    assert np.array_equal(rows[0]["embedding"], vector) and rows[0]["probabilities"] == {"a": 0.9, "b": 0.1}
    assert rows[0]["input_hash"] == describe_input("text 0")["input_hash"] and rows[0]["input_words"] == 2
    assert [row["id"] for row in log.rows("m", after=(rows[4]["ts"], rows[4]["id"]), limit=3)] == ids[5:8]
    assert log.model_of(ids[0]) == "m" and log.model_of("req-missing") is None
    log.max_rows = 5
    assert log.rotate() == 7 and log.rotated_out() == 7  # the oldest go, and are counted
    log.set_meta("rotated_out", "9")  # an update of the same key, not a second row
    assert log.rotated_out() == 9 and log.meta("nothing") is None
    assert [row["id"] for row in log.rows()] == ids[7:]
    assert log.models() == ["m"]
    odd = log.add(_prediction("nul \x00 and a lone \ud800 surrogate"))  # PostgreSQL's TEXT takes no NUL
    assert "\x00" not in log.rows("m")[-1]["input_text"] and log.model_of(odd) == "m"


def test_sqlite_log_records_feedback_and_rotates_counting(tmp_path):
    log = PredictionLog(tmp_path / "log.sqlite")
    _exercise(log)
    log.close()
    again = open_log(tmp_path / "log.sqlite")  # a reader (monitor check) sees what the server wrote
    assert len(again.rows("m")) == 6 and again.rotated_out() == 9
    with pytest.raises(UserError, match="no prediction log"):
        open_log(tmp_path / "missing.sqlite")


def test_postgres_log_is_the_same_log(tmp_path):
    from postgres import pg_bin, postgres_server

    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed (scripts/ensure-postgres.sh)")
    with postgres_server() as url:
        log = PredictionLog(url)
        _exercise(log)
        log.close()
    with pytest.raises(UserError, match="cannot connect"):
        PredictionLog(url)  # the server is gone: one line, not a traceback


def test_text_is_kept_only_when_asked():
    kept, hashed = describe_input("a secret text"), describe_input("a secret text", keep_text=False)
    assert kept["input_text"] == "a secret text" and hashed["input_text"] is None
    assert kept["input_hash"] == hashed["input_hash"] and hashed["input_chars"] == 13


def _series(values: list[float | None], signal: str = "embedding_mmd_p") -> list[dict]:
    return [{"window": i, "start": 1e9 + i, "end": 1e9 + i + 1, "rows": 50, "signals": {signal: v}, "intervals": {}}
            for i, v in enumerate(values)]


def test_rules_need_consecutive_windows_and_keep_quiet_during_cooldown():
    rule = AlertRule(signal="embedding_mmd_p", below=0.01, consecutive=2, cooldown=2)
    low, high = 0.001, 0.5
    alerts = evaluate(_series([low, high, low, low, low, low, low, low, None, low]), [rule])
    # window 0 alone is not enough; 2-3 break twice in a row -> alert at 3; quiet through 4-5; still broken at 6
    # (4, 5, 6 in a row): reminded at 6; the streak starts again, so 7 alone does not alert; None breaks it
    assert [a["window"] for a in alerts] == [3, 6]
    assert alerts[0]["rule"] == "embedding_mmd_p < 0.01" and alerts[0]["windows_in_a_row"] == 2
    above = AlertRule(signal="domain_auc", above=0.9)
    assert [a["window"] for a in evaluate(_series([0.5, 0.95, 0.7], "domain_auc"), [above])] == [1]


def test_config_errors_name_the_field(tmp_path):
    bad = tmp_path / "monitor.yaml"
    bad.write_text("window_requests: 50\nrules:\n  - {signal: embedding_mmd_p}\n")
    with pytest.raises(ConfigError, match="give exactly one of above or below"):
        load_monitor_config(bad)
    bad.write_text("window_requests: 50\nrules:\n  - {signal: mmd_pvalue, below: 0.01}\n")
    with pytest.raises(ConfigError, match=r"rules\.0\.signal"):
        load_monitor_config(bad)
    with pytest.raises(ValueError, match="exactly one of window_requests or window_minutes"):
        MonitorConfig(window_requests=None)
    shipped = load_monitor_config(EXAMPLE)
    assert shipped.window_requests == 50 and {r.signal for r in shipped.rules} >= {"embedding_mmd_p", "domain_auc"}


def test_webhook_gets_each_alert_and_a_dead_one_does_not_hide_it():
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    alerts = evaluate(_series([0.001]), [AlertRule(signal="embedding_mmd_p", below=0.01, name="input-drift")])
    lines: list[str] = []
    try:
        assert deliver(alerts, "bbc", f"http://127.0.0.1:{server.server_port}/hook", lines.append) == []
    finally:
        server.shutdown()
    assert received[0]["model"] == "bbc" and received[0]["rule"] == "input-drift" and "ALERT" in received[0]["text"]
    failures = deliver(alerts, "bbc", f"http://127.0.0.1:{server.server_port}/hook", lines.append, timeout=2)
    assert failures and lines[0].startswith("ALERT input-drift: bbc window 0") and "could not be posted" in lines[-1]


def _reference(rng: np.random.Generator) -> Reference:
    return Reference(embeddings=rng.normal(size=(120, 8)).astype(np.float32), input_words=rng.integers(5, 50, 120),
                     confidences=rng.uniform(0.6, 1.0, 120), predictions={"a": 60, "b": 60}, labels=["a", "b"],
                     vocabulary={"text", "news"}, oov_share=0.1, accuracy=0.9, rows=120, embedder="test")


def test_windows_and_signals_see_a_shift_and_feedback(tmp_path):
    rng = np.random.default_rng(0)
    reference = _reference(rng)
    log = PredictionLog(tmp_path / "log.sqlite")
    for i in range(60):  # 30 like the reference, then 30 shifted inputs, all predicted "a", half labelled
        shifted = i >= 30
        vector = rng.normal(size=8) + (3.0 if shifted else 0.0)
        ident = log.add(_prediction("zzz qqq" if shifted else "text news", "a" if shifted else "ab"[i % 2],
                                    ts=time.time() + i, vector=vector))
        if i % 2 == 0:
            log.feedback(ident, label="b" if shifted else "ab"[i % 2])
    config = MonitorConfig(window_requests=30, permutations=100, min_feedback=10)
    rows = log.rows("m")
    assert [len(w) for w in cut_windows(rows, config)] == [30, 30]
    assert [len(w) for w in cut_windows(rows[:44], config)] == [30]  # a partial window under half is not read
    calm, drifted = (w["signals"] for w in signal_series(rows, reference, config))
    assert calm["embedding_mmd_p"] > 0.05 and drifted["embedding_mmd_p"] < 0.02
    assert calm["domain_auc"] < 0.8 < drifted["domain_auc"]
    assert calm["oov_share"] == 0.0 and drifted["oov_share"] == 1.0 and drifted["oov_share_delta"] == 0.9
    assert calm["prediction_psi"] < 0.1 < drifted["prediction_psi"]
    assert calm["accuracy"] == 1.0 and drifted["accuracy"] == 0.0
    series = signal_series(rows, reference, config)
    assert series[1]["intervals"]["accuracy"][1] < 0.25  # 0 of 15 right: the Wilson interval's top is low


def test_report_draws_every_signal_and_lists_alerts(tmp_path):
    from tuneforge.monitor.report import write_report

    rule = AlertRule(signal="embedding_mmd_p", below=0.01, name="input-drift")
    windows = [{"window": i, "start": 1e9, "end": 1e9, "rows": 50, "intervals": {"accuracy": [0.5, 0.9]},
                "signals": {"embedding_mmd_p": p, "domain_auc": 0.5 + i / 10, "accuracy": 0.7}}
               for i, p in enumerate([0.4, 0.3, 0.001])]
    result = {"model": "bbc", "run": "runs/bbc", "log": "log.sqlite", "rows": 150, "labelled": 0, "rotated_out": 3,
              "window": "50 requests", "windows": windows, "rules": [rule.model_dump()],
              "alerts": evaluate(windows, [rule]),
              "reference": {"rows": 300, "accuracy": 0.96, "baseline": {"domain_auc": 0.5, "accuracy": 0.96}}}
    page = write_report(result, tmp_path / "monitor.html").read_text()
    assert "1 alert(s)" in page and "<table id='alerts'>" in page and "input-drift" in page
    assert page.count("data:image/png;base64,") == 1 and "3 older ones rotated out" in page


def test_retrain_refuses_before_training_what_it_cannot_do():
    from tuneforge.pipelines.retrain import _check_trainable

    rows = [(f"text {i}", "a") for i in range(6)]
    with pytest.raises(UserError, match="no labelled feedback is left to hold out"):
        _check_trainable(rows, [], [], ["a"])
    with pytest.raises(UserError, match="fewer than 5 training rows of b"):
        _check_trainable(rows, rows[:1], [("x", "b")], ["a", "b"])
    _check_trainable(rows, rows[:1], [(f"y {i}", "b") for i in range(5)], ["a", "b"])
