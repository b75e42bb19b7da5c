"""The drift drill: a served BBC News run gets its own test articles first (shuffled, in windows), then traffic from
another corpus (tweets, or chatterbot lines on the same topics), and the monitor watches as it comes.

The run is served in this process (``tuneforge.serve`` with a prediction log and ``--monitor`` rules), every text is
one ``POST /v1/classify`` over HTTP, and every completed window is checked against the run's validation split by the
server's own watcher. Afterwards ``monitor check`` reads the whole log, the same rules; both sets of alarms are
printed. With ``--report`` the page is written and screenshotted in headless Chromium.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/monitor_replay.py RUN_DIR [--config examples/monitor.yaml]
        [--shift tweets|chatterbot] [--windows-before 4] [--windows-after 3] [--report DIR]

The last line is one JSON object: the alarms (window, rule, value), the window where the shift began, the first
window that raised an alarm, and the alarms raised before the shift (false alarms).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHOWN = ("embedding_mmd_p", "domain_auc", "prediction_psi", "prediction_chi2_p", "oov_share", "confidence_mean",
         "input_words_mean")
SHIFTS = {"tweets": ("offline:tweets", "text", "label"),
          "chatterbot": ("offline:chatterbot-news-topics", "text", "label")}


def main() -> None:
    from tuneforge.config.monitor import load_monitor_config
    from tuneforge.monitor import replay
    from tuneforge.monitor.check import check
    from tuneforge.serve.server import serve

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--config", default=str(Path(__file__).parents[1] / "examples" / "monitor.yaml"))
    parser.add_argument("--shift", choices=sorted(SHIFTS), default="tweets")
    parser.add_argument("--windows-before", type=int, default=4)
    parser.add_argument("--windows-after", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", help="write monitor.html and its screenshot here")
    args = parser.parse_args()

    config = load_monitor_config(args.config)
    size = config.window_requests
    before = replay.shuffled(replay.run_split(args.run_dir, "test"), args.seed)
    before = (before * (1 + size * args.windows_before // max(1, len(before))))[:size * args.windows_before]
    path, text_column, _ = SHIFTS[args.shift]
    after = replay.shuffled(replay.table_rows(path, text_column, SHIFTS[args.shift][2]), args.seed,
                            size * args.windows_after)
    scratch = Path(tempfile.mkdtemp(prefix="tuneforge-drill-"))
    served_alarms: list[str] = []
    started = time.time()
    server = serve([args.run_dir], log_db=scratch / "log.sqlite", monitor=config, say=served_alarms.append)
    try:
        server.wait_ready()
        model = next(iter(server.state.catalog.models))
        replay.send(server.url, model, [text for text, _ in before + after])
        server.state.recorder.idle(timeout=600)
    finally:
        server.stop()
    seconds = time.time() - started
    result = check(scratch / "log.sqlite", args.run_dir, config, model, log=lambda line: None, notify=False)
    alarms = [{"window": a["window"], "rule": a["rule"], "value": a["value"]} for a in result["alerts"]]
    shift_window = args.windows_before
    summary = {"benchmark": "monitor_replay", "run": str(args.run_dir), "shift": args.shift, "window": size,
               "windows": len(result["windows"]), "shift_starts_at_window": shift_window,
               "requests": len(before) + len(after), "seconds": round(seconds, 1),
               "false_alarms_before_shift": [a for a in alarms if a["window"] < shift_window],
               "first_alarm_after_shift": min((a["window"] for a in alarms if a["window"] >= shift_window),
                                              default=None),
               "server_alarm_lines": [line for line in served_alarms if line.startswith("ALERT")],
               "alarms": alarms,
               "signals": [{"window": w["window"], **{k: w["signals"][k] for k in SHOWN}} for w in result["windows"]]}
    if args.report:
        summary["report"] = _report(result, Path(args.report))
    shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(summary))


def _report(result: dict, folder: Path) -> dict:
    from tuneforge.monitor.report import write_report

    folder.mkdir(parents=True, exist_ok=True)
    page = write_report(result, folder / "monitor.html")
    shot = folder / "monitor.png"
    chromium = shutil.which("chromium")
    if chromium is None:
        return {"page": str(page), "screenshot": None, "why": "no chromium (apt-get install chromium)"}
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1200,2600", page.resolve().as_uri()],
                   capture_output=True, timeout=120, check=False)
    return {"page": str(page), "screenshot": str(shot) if shot.exists() else None}


if __name__ == "__main__":
    sys.exit(main())
