"""``tuneforge monitor check``: one model's logged traffic against its run's reference, window by window, the
rules applied, and the alerts delivered. The result is what ``monitor report`` draws."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from tuneforge.config.monitor import MonitorConfig
from tuneforge.errors import UserError
from tuneforge.monitor.alerts import deliver, evaluate
from tuneforge.monitor.log import open_log
from tuneforge.monitor.reference import Reference, load_reference, run_folder
from tuneforge.monitor.signals import signal_series


def check(log_target: str | Path, run_dir: str | Path, config: MonitorConfig, model: str | None = None,
          log: Callable[[str], None] = print, notify: bool = True, reference: Reference | None = None) -> dict[str, Any]:
    """The windows, their signals and the alerts for the model served from ``run_dir`` (its folder's name unless
    ``model`` says otherwise). With ``notify``, the alerts no earlier check announced (``new_alerts``) are logged
    and posted to the webhook, and the log remembers them, so a check from cron pages once per alert."""
    root, _, _ = run_folder(run_dir)
    name = model or root.resolve().name
    prediction_log = open_log(log_target)
    try:
        rows = prediction_log.rows(name)
        if not rows:
            known = ", ".join(prediction_log.models()) or "none yet"
            raise UserError(f"{log_target}: no requests logged for model {name!r} (logged models: {known}); "
                            f"--model NAME picks one")
        rotated = prediction_log.rotated_out()
        reference = reference or load_reference(root, log=log)
        series = signal_series(rows, reference, config)
        alerts = evaluate(series, config.rules)
        announced = float(prediction_log.meta(f"announced:{name}") or "-inf")
        new = [alert for alert in alerts if alert["end_ts"] > announced]
        failures: list[str] = []
        if notify and new:
            failures = deliver(new, name, config.webhook, log)
            prediction_log.set_meta(f"announced:{name}", repr(max(alert["end_ts"] for alert in new)))
    finally:
        prediction_log.close()
    return {"model": name, "run": str(root), "log": str(log_target), "rows": len(rows), "rotated_out": rotated,
            "new_alerts": len(new),
            "labelled": sum(row.get("label") is not None for row in rows),
            "window": f"{config.window_requests} requests" if config.window_requests else
            f"{config.window_minutes:g} minutes", "reference": _reference_summary(reference),
            "rules": [rule.model_dump() for rule in config.rules], "windows": series, "alerts": alerts,
            "delivery_failures": failures}


def _reference_summary(reference: Reference) -> dict[str, Any]:
    """The reference's own value of each signal, drawn as a line on the report's plots."""
    import numpy as np

    total = sum(reference.predictions.values())
    return {"rows": reference.rows, "accuracy": round(reference.accuracy, 4), "embedder": reference.embedder,
            "prediction_shares": {k: round(v / total, 4) for k, v in sorted(reference.predictions.items())},
            "baseline": {"input_words_mean": round(float(np.mean(reference.input_words)), 2),
                         "oov_share": round(reference.oov_share, 4), "domain_auc": 0.5,
                         "confidence_mean": round(float(np.mean(reference.confidences)), 4),
                         "accuracy": round(reference.accuracy, 4)}}
