"""The Chat-and-try page: pick a served run (any OpenAI-compatible server's URL) or start ``tuneforge serve`` on a
run folder; chat with it, the answer streamed piece by piece; classify texts with a labelling run."""

from __future__ import annotations

from typing import Any, Iterator

import gradio as gr

from tuneforge.errors import UserError
from tuneforge.ui import chat
from tuneforge.ui.shared import Context, error_line, frame, guarded

TICK_S = 1.0


def build(ctx: Context) -> dict[str, Any]:
    timer = gr.Timer(TICK_S, active=False)
    serving = gr.State(None)  # the id of the serve job this page started
    with gr.Row():
        run = gr.Dropdown(choices=_choices(ctx), value=None, label="run folder to serve", elem_id="chat-run", scale=3)
        serve = gr.Button("Serve it", elem_id="chat-serve", scale=1)
        url = gr.Textbox(label="server URL (OpenAI-compatible)", placeholder="http://127.0.0.1:8000",
                         elem_id="chat-url", scale=3)
        key = gr.Textbox(label="API key (if the server needs one)", type="password", elem_id="chat-key", scale=2)
        connect = gr.Button("Connect", elem_id="chat-connect", scale=1)
    status = gr.Markdown("", elem_id="chat-status")
    model = gr.Dropdown(choices=[], label="model", elem_id="chat-model")
    history = gr.State([])
    bot = gr.Chatbot(label="chat", elem_id="chat-bot", height=320)
    with gr.Row():
        message = gr.Textbox(label="message", placeholder="ask something", elem_id="chat-message", scale=5)
        max_tokens = gr.Number(value=64, precision=0, minimum=1, label="max new tokens", elem_id="chat-max-tokens",
                               scale=1)
        send = gr.Button("Send", variant="primary", elem_id="chat-send", scale=1)
        clear = gr.Button("Clear", elem_id="chat-clear", scale=1)
    with gr.Accordion("classify texts (a labelling run)", open=False):
        texts = gr.Textbox(label="texts, one per line", lines=4, elem_id="classify-texts")
        classify = gr.Button("Classify", elem_id="classify-button")
        labels = gr.Dataframe(label="labels", interactive=False, visible=False, elem_id="classify-result")
    serve.click(guarded(4)(lambda name: _serve(ctx, name)), [run], [status, url, serving, timer])
    timer.tick(lambda job_id, address: _poll(ctx, job_id, address), [serving, url], [status, model, timer],
               show_progress="hidden")
    connect.click(guarded(2)(_connect), [url, key], [status, model])
    send.click(_ask, [message, history, url, model, max_tokens, key], [bot, history, message, status])
    message.submit(_ask, [message, history, url, model, max_tokens, key], [bot, history, message, status])
    clear.click(lambda: ([], [], ""), [], [bot, history, status])
    classify.click(guarded(2)(_classify), [url, model, texts, key], [status, labels])
    return {"run": run, "refresh": lambda: gr.update(choices=_choices(ctx))}


def _choices(ctx: Context) -> list[tuple[str, str]]:
    return [(f"{name} ({what})", name) for name, what in chat.servable(ctx.workspace).items()]


def _serve(ctx: Context, name: str | None) -> tuple[Any, ...]:
    from tuneforge.serve.server import free_port

    if not name:
        raise UserError("pick a run folder to serve")
    folder = ctx.workspace.run_folder(name)
    port = free_port()
    job = ctx.jobs.start("serve", chat.serve_args(ctx.workspace.relative(folder), port), run_dir=folder, port=port)
    address = f"http://127.0.0.1:{port}"
    return f"starting tuneforge serve on {name} ({job.id}): loading the model", address, job.id, gr.Timer(active=True)


def _poll(ctx: Context, job_id: str | None, address: str) -> tuple[Any, ...]:
    """Until the server says ready: then its models (the served run chosen)."""
    job = ctx.jobs.jobs.get(job_id) if job_id else None
    if job is None:
        return gr.skip(), gr.skip(), gr.Timer(active=False)
    if not job.running:
        lines = [line for line in job.tail(40).splitlines() if line.startswith("error:")]
        return (lines[-1] if lines else f"error: tuneforge serve ended ({job.status()})", gr.skip(),
                gr.Timer(active=False))
    if not chat.ready(address):
        return gr.skip(), gr.skip(), gr.skip()
    try:
        names = [m["id"] for m in chat.models(address)]
    except UserError as exc:
        return error_line(exc), gr.skip(), gr.Timer(active=False)
    served = job.run_dir.name if job.run_dir and job.run_dir.name in names else (names[0] if names else None)
    return (f"ready: {address} serves {', '.join(names)}", gr.update(choices=names, value=served),
            gr.Timer(active=False))


def _connect(address: str, key: str) -> tuple[Any, ...]:
    if not (address or "").strip():
        raise UserError("give the server's URL (or serve a run folder)")
    names = [m["id"] for m in chat.models(address.strip(), key)]
    return f"connected: {address} serves {', '.join(names) or 'nothing'}", gr.update(choices=names,
                                                                                   value=names[0] if names else None)


def _ask(message: str, history: list[dict[str, str]], address: str, model: str | None, max_tokens: float,
         key: str) -> Iterator[tuple[Any, ...]]:
    """The user's turn at once, then the answer as it streams in."""
    if not (message or "").strip():
        yield gr.skip(), gr.skip(), gr.skip(), "error: type a message first"
        return
    turns = [*history, {"role": "user", "content": message}]
    answer, pieces = {"role": "assistant", "content": ""}, 0
    yield [*turns, answer], history, "", f"{model}: answering"
    try:
        if not model or not (address or "").strip():
            raise UserError("connect to a server and pick a model first (or serve a run folder)")
        for piece in chat.stream_chat(address.strip(), model, turns, int(max_tokens or 64), key):
            answer, pieces = {"role": "assistant", "content": answer["content"] + piece}, pieces + 1
            yield [*turns, answer], gr.skip(), gr.skip(), gr.skip()
    except Exception as exc:  # noqa: BLE001 - one line in the page
        yield turns, history, message, error_line(exc)
        return
    yield [*turns, answer], [*turns, answer], gr.skip(), f"{model}: answered ({pieces} pieces streamed)"


def _classify(address: str, model: str | None, texts: str, key: str) -> tuple[Any, ...]:
    lines = [line.strip() for line in (texts or "").splitlines() if line.strip()]
    if not lines:
        raise UserError("type one text per line to classify")
    if not model:
        raise UserError("connect to a server and pick a labelling model first")
    results = chat.classify(address.strip(), model, lines, key)
    rows = []
    for text, result in zip(lines, results):
        probabilities = result.get("probabilities") or {}
        top = max(probabilities.values()) if probabilities else None
        found = result.get("label") or ", ".join(f"{e.get('text')} ({e.get('type')})" for e in
                                                 result.get("entities", []))
        rows.append([text, found, f"{top:.3f}" if top is not None else ""])
    return f"{model}: labelled {len(rows)} texts", gr.update(value=frame(["text", "label", "probability"], rows),
                                                           visible=True)
