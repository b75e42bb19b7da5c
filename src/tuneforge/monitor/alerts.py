"""Alert rules over the window series (a threshold, so many windows in a row, a cooldown after each alert), and
where alerts go: a log line each, a webhook POST, and the exit code of ``tuneforge monitor check``."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Callable

from tuneforge.config.monitor import AlertRule


def evaluate(series: list[dict[str, Any]], rules: list[AlertRule]) -> list[dict[str, Any]]:
    """The alerts the rules raise over the windows, in window order."""
    alerts = []
    for rule in rules:
        streak, quiet = 0, 0
        for window in series:
            value = window["signals"].get(rule.signal)
            streak = streak + 1 if rule.broken(value) else 0
            if quiet:
                quiet -= 1
                continue
            if streak >= rule.consecutive:
                alerts.append({"rule": rule.name, "signal": rule.signal, "value": value,
                               "threshold": {"above": rule.above} if rule.above is not None else {"below": rule.below},
                               "window": window["window"], "windows_in_a_row": streak,
                               "window_start": _iso(window["start"]), "window_end": _iso(window["end"]),
                               "end_ts": window["end"]})
                streak, quiet = 0, rule.cooldown
    return sorted(alerts, key=lambda alert: (alert["window"], alert["rule"]))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")


def describe(alert: dict[str, Any], model: str) -> str:
    (kind, threshold), = alert["threshold"].items()
    return (f"ALERT {alert['rule']}: {model} window {alert['window']} ({alert['window_start']} .. "
            f"{alert['window_end']}): {alert['signal']} = {alert['value']:.4g}, {kind} {threshold:g} for "
            f"{alert['windows_in_a_row']} window(s) in a row")


def deliver(alerts: list[dict[str, Any]], model: str, webhook: str | None, log: Callable[[str], None],
            timeout: float = 10) -> list[str]:
    """A log line per alert, and one webhook POST per alert; returns the delivery failures (never raises: an
    unreachable webhook must not hide the alert, which is still logged and still sets the exit code)."""
    import urllib.request

    failures = []
    for alert in alerts:
        log(describe(alert, model))
        if webhook:
            body = json.dumps({"model": model, **alert, "text": describe(alert, model)}).encode()
            request = urllib.request.Request(webhook, data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    response.read()
            except OSError as exc:
                failures.append(f"webhook {webhook}: {exc}")
                log(f"warning: the alert could not be posted to {webhook} ({exc})")
    return failures
