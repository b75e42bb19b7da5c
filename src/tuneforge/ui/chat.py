"""The Chat page's side of ``tuneforge serve``: which run folders can be served (and what they do), start a server
on one, and talk to any OpenAI-compatible server: chat with streaming (/v1/chat/completions, server-sent events),
classify texts (/v1/classify)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Iterator

from tuneforge.errors import UserError
from tuneforge.ui.workspace import Workspace

TIMEOUT_S = 300


def servable(workspace: Workspace) -> dict[str, str]:
    """Run folders with a saved model, by name -> what they do ("writes text" or "labels text")."""
    from tuneforge.tasks.registry import task_spec
    from tuneforge.tasks.run_folder import task_of
    from tuneforge.ui.workspace import read_json

    found = {}
    for name, folder in workspace.run_folders().items():
        meta = read_json(folder / "model" / "tuneforge.json")
        if meta:
            try:
                generates = task_spec(task_of(meta)).generates
            except ValueError:
                continue
            found[name] = "writes text" if generates else "labels text"
    return found


def serve_args(run_dir: str, port: int) -> list[str]:
    return ["serve", run_dir, "--host", "127.0.0.1", "--port", str(port), "--log-db", "none"]


def _request(url: str, body: dict[str, Any] | None = None, key: str = "") -> urllib.request.Request:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    return urllib.request.Request(url, data=data, headers=headers, method="POST" if body is not None else "GET")


def _open(request: urllib.request.Request, timeout: float = TIMEOUT_S) -> Any:
    """The response, or one line: the server's own error message, or why it could not be reached."""
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - a URL the user gave (loopback default)
    except urllib.error.HTTPError as error:
        try:
            message = json.loads(error.read()).get("error", {}).get("message")
        except (ValueError, AttributeError):
            message = None
        raise UserError(f"{request.full_url}: {error.code} {message or error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise UserError(f"{request.full_url}: not reachable ({reason}); start tuneforge serve, or check the URL") \
            from None


def ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url.rstrip('/')}/ready", timeout=2) as response:  # noqa: S310
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def models(base_url: str, key: str = "") -> list[dict[str, Any]]:
    with _open(_request(f"{base_url.rstrip('/')}/v1/models", key=key), timeout=10) as response:
        return json.loads(response.read()).get("data", [])


def stream_chat(base_url: str, model: str, messages: list[dict[str, str]], max_tokens: int = 64,
                key: str = "") -> Iterator[str]:
    """The answer's text pieces as the server streams them (OpenAI's chat.completion.chunk events)."""
    body = {"model": model, "messages": messages, "max_tokens": int(max_tokens), "stream": True}
    with _open(_request(f"{base_url.rstrip('/')}/v1/chat/completions", body, key)) as response:
        for raw in response:
            line = raw.decode("utf-8").strip()
            if not line.startswith("data:"):
                continue
            data = line[len("data:"):].strip()
            if data == "[DONE]":
                return
            chunk = json.loads(data)
            if "error" in chunk:
                raise UserError(f"{model}: {chunk['error'].get('message', chunk['error'])}")
            for choice in chunk.get("choices", []):
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    yield piece


def classify(base_url: str, model: str, texts: list[str], key: str = "") -> list[dict[str, Any]]:
    body = {"model": model, "input": texts}
    with _open(_request(f"{base_url.rstrip('/')}/v1/classify", body, key)) as response:
        return json.loads(response.read())["data"]
