"""The HTTP API (FastAPI): OpenAI-compatible chat completions, completions and models for generative runs;
/v1/classify for labelling runs (labels, entities with offsets, answer spans); health, readiness and Prometheus
metrics. API keys, a per-key rate limit and limits on body size, prompt tokens, max_tokens and queue depth; every
error is an OpenAI-style JSON body."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field

from tuneforge.serve.limits import Limits, RateLimiter
from tuneforge.serve.metrics import ServerMetrics


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.headers = status, message, kind, code, headers or {}


def error_body(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class Message(BaseModel):
    role: str
    content: str | list[dict[str, Any]] = ""


class Decoding(BaseModel):
    """What chat and text completions share: the model and how to decode."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = Field(1, ge=1, le=1)


class ChatRequest(Decoding):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(Decoding):
    prompt: str | list[str]


class FeedbackRequest(BaseModel):
    id: str = Field(min_length=1, max_length=64)
    label: str | None = Field(None, min_length=1, max_length=200)
    rating: float | None = Field(None, ge=-1e6, le=1e6)


class ClassifyRequest(BaseModel):
    model: str
    input: str | list[str] | None = None
    question: str | None = None  # question answering: a question and its context
    context: str | None = None


@dataclass
class State:
    """What the endpoints share: the catalog once loaded (None while loading), keys, limits, metrics."""

    limits: Limits
    keys: list[str]
    metrics: ServerMetrics
    catalog: Any = None
    load_error: str | None = None
    recorder: Any = None  # serve.watch.Recorder: the prediction log, when the server keeps one
    limiter: RateLimiter = field(init=False)
    started: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.limits.requests_per_minute)


def create_app(state: State) -> FastAPI:
    app = FastAPI(title="tuneforge", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.tf = state

    _guards(app, state)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "uptime_s": round(time.time() - state.started, 1)}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        if state.catalog is None:
            body = {"ready": False, "error": state.load_error} if state.load_error else {"ready": False}
            return JSONResponse(body, status_code=503)
        return JSONResponse({"ready": True, "models": sorted(state.catalog.models)})

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        if state.catalog is not None:
            for engine in state.catalog.engines:
                state.metrics.queue(engine.name, engine.depth(), engine.cancelled_rows)
        body, content_type = state.metrics.render()
        return PlainTextResponse(body, media_type=content_type)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        catalog = _catalog(state)
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": int(state.started), "owned_by": "tuneforge",
             "task": served.task.name, "source": served.source} for name, served in sorted(catalog.models.items())]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request) -> Any:
        served = _model(state, body.model, request, generative=True)
        messages = [{"role": m.role, "content": _text(m.content)} for m in body.messages]
        prompt_ids = served.generator.prompt_ids(messages)  # the run's template and system prompt
        job_args = _decoding(state, served, body.max_completion_tokens or body.max_tokens, body.temperature,
                             body.top_p, body.stop, prompt_ids)
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), messages[-1]["content"])
        return await _respond(state, served, job_args, body.stream, request, chat=True, logged_text=last_user)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Any:
        served = _model(state, body.model, request, generative=True)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise ApiError(422, "prompt: give one prompt per request", "invalid_request_error", "invalid_value")
        prompt_ids = served.generator.tokenizer(prompts[0])["input_ids"]
        job_args = _decoding(state, served, body.max_tokens, body.temperature, body.top_p, body.stop, prompt_ids)
        return await _respond(state, served, job_args, body.stream, request, chat=False, logged_text=prompts[0])

    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest, request: Request) -> dict[str, Any]:
        served = _model(state, body.model, request, generative=False)
        if served.waiting >= state.limits.max_queue:
            raise ApiError(429, f"{served.waiting} requests for {served.name!r} are waiting; retry shortly",
                           "rate_limit_error", "queue_full", headers={"Retry-After": "1"})
        served.waiting += 1
        try:
            result = await asyncio.get_running_loop().run_in_executor(None, _label_and_record, state, served, body)
        finally:
            served.waiting -= 1
        return {"object": "list", "model": served.name, "data": result}

    @app.post("/v1/feedback")
    async def feedback(body: FeedbackRequest) -> dict[str, Any]:
        """A true label and/or a rating for a logged request (its id: the classify item's or the completion's)."""
        await _record_feedback(state, body)
        return {"object": "feedback", "id": body.id, "label": body.label, "rating": body.rating}

    return app


async def _record_feedback(state: State, body: FeedbackRequest) -> None:
    """The feedback checked (a log, a known id, a label of the model) and attached to its request."""
    if state.recorder is None:
        raise ApiError(400, "this server keeps no prediction log (tuneforge serve --log-db FILE)",
                       "invalid_request_error", "no_log")
    if body.label is None and body.rating is None:
        raise ApiError(422, "give a label, a rating or both", "invalid_request_error", "invalid_value")
    loop = asyncio.get_running_loop()
    model = await loop.run_in_executor(None, state.recorder.log.model_of, body.id)
    if model is None:
        raise ApiError(404, f"id {body.id!r} is not in the prediction log", "invalid_request_error", "not_found")
    served = state.catalog.models.get(model) if state.catalog is not None else None
    labels = getattr(getattr(served, "predictor", None), "labels", None)
    if body.label is not None and isinstance(labels, list) and labels and body.label not in labels:
        raise ApiError(422, f"label: {body.label!r} is not one of {model}'s labels ({', '.join(labels)})",
                       "invalid_request_error", "invalid_value")
    await loop.run_in_executor(None, state.recorder.log.feedback, body.id, body.label, body.rating)


def _guards(app: FastAPI, state: State) -> None:
    """OpenAI-style errors; the API key, the rate limit and the body size checked before any work; every /v1
    response counted in the metrics."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.message, exc.kind, exc.code), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        return JSONResponse(error_body(f"{where}: {first['msg']}" if where else first["msg"], "invalid_request_error",
                                       "invalid_value"), status_code=422)

    @app.middleware("http")
    async def _guard(request: Request, call_next: Any) -> Response:
        """Body size and API key before any work; the response counted in the metrics."""
        started = time.perf_counter()
        path = request.url.path
        try:
            if path.startswith("/v1/"):
                _check_key(state, request)
                size = request.headers.get("content-length")
                if request.method == "POST" and (size is None or not size.isdigit()):
                    raise ApiError(411, "a Content-Length header is required (bodies are size-limited)",
                                   "invalid_request_error", "length_required")
                if size is not None and size.isdigit() and int(size) > state.limits.max_body_bytes:
                    raise ApiError(413, f"request body of {size} bytes is over the limit of "
                                   f"{state.limits.max_body_bytes}", "invalid_request_error", "request_too_large")
            response = await call_next(request)
        except ApiError as exc:
            response = JSONResponse(error_body(exc.message, exc.kind, exc.code), status_code=exc.status,
                                    headers=exc.headers)
        if path.startswith("/v1/"):
            route = getattr(request.scope.get("route"), "path", None) or "other"  # never the raw path: unbounded
            state.metrics.request(getattr(request.state, "model", "-"), route, response.status_code,
                                  time.perf_counter() - started)
        return response


def _check_key(state: State, request: Request) -> None:
    if not state.keys:
        return
    header = request.headers.get("authorization", "")
    given = header[7:].strip() if header.lower().startswith("bearer ") else ""
    # compare with every key, in constant time: neither the key's content nor which key matched shows in the timing
    matched = [hmac.compare_digest(given.encode(), key.encode()) for key in state.keys]
    if not given or not any(matched):
        raise ApiError(401, "missing or wrong API key (Authorization: Bearer KEY)", "invalid_request_error",
                       "invalid_api_key")
    wait = state.limiter.take(state.keys[matched.index(True)])
    if wait > 0:
        raise ApiError(429, f"rate limit of {state.limits.requests_per_minute} requests per minute reached; retry in "
                       f"{wait:.1f} s", "rate_limit_error", "rate_limit_exceeded",
                       headers={"Retry-After": str(max(1, round(wait)))})


def _catalog(state: State) -> Any:
    if state.catalog is None:
        if state.load_error:
            raise ApiError(503, f"the models failed to load: {state.load_error}", "server_error", "load_failed")
        raise ApiError(503, "the models are still loading; retry shortly (GET /ready says when)", "server_error",
                       "loading", headers={"Retry-After": "2"})
    return state.catalog


def _model(state: State, name: str, request: Request, generative: bool) -> Any:
    catalog = _catalog(state)
    served = catalog.models.get(name)
    if served is None:
        raise ApiError(404, f"model {name!r} does not exist (GET /v1/models lists them: "
                       f"{', '.join(sorted(catalog.models))})", "invalid_request_error", "model_not_found")
    request.state.model = name
    if generative and served.generator is None:
        raise ApiError(400, f"model {name!r} is a {served.task.name} run: use POST /v1/classify",
                       "invalid_request_error", "wrong_endpoint")
    if not generative and served.generator is not None:
        raise ApiError(400, f"model {name!r} generates text: use POST /v1/chat/completions or /v1/completions",
                       "invalid_request_error", "wrong_endpoint")
    return served


def _text(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


def _decoding(state: State, served: Any, max_tokens: int | None, temperature: float | None, top_p: float | None,
              stop: str | list[str] | None, prompt_ids: list[int]) -> dict[str, Any]:
    """The job's settings: the request's, else the run's generation settings; limits checked."""
    limits, defaults = state.limits, served.generator.config
    if len(prompt_ids) > limits.max_prompt_tokens:
        raise ApiError(413, f"the prompt has {len(prompt_ids)} tokens, over the limit of {limits.max_prompt_tokens}",
                       "invalid_request_error", "context_length_exceeded")
    if max_tokens is not None and max_tokens > limits.max_tokens:
        raise ApiError(422, f"max_tokens: {max_tokens} is over the limit of {limits.max_tokens}",
                       "invalid_request_error", "invalid_value")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4 or any(not 0 < len(item) <= 64 for item in stops):
        raise ApiError(422, "stop: at most 4 strings, each 1 to 64 characters", "invalid_request_error",
                       "invalid_value")
    return {"prompt_ids": prompt_ids, "adapter": served.adapter,
            "max_tokens": max_tokens or min(defaults.max_new_tokens, limits.max_tokens),
            "stop_ids": list(served.generator.stop_ids),
            "stop_strings": stops or list(defaults.stop_strings),
            "temperature": temperature if temperature is not None else
            (defaults.temperature if defaults.do_sample else 0.0),
            "top_p": top_p if top_p is not None else (defaults.top_p if defaults.do_sample else 1.0)}


async def _respond(state: State, served: Any, job_args: dict[str, Any], stream: bool, request: Request,
                   chat: bool, logged_text: str = "") -> Any:
    from tuneforge.serve.engine import Job

    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    job = Job(**job_args, emit=lambda kind, value: loop.call_soon_threadsafe(events.put_nowait, (kind, value)))
    if not served.engine.submit(job):
        raise ApiError(429, f"the queue of {served.name!r} is full ({state.limits.max_queue} waiting); retry shortly",
                       "rate_limit_error", "queue_full", headers={"Retry-After": "1"})
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    created, started = int(time.time()), time.perf_counter()

    async def record(result: dict[str, Any]) -> None:
        if state.recorder is not None:
            await loop.run_in_executor(None, state.recorder.record_generation, served.name, request.url.path, ident,
                                       logged_text, result["completion_tokens"], time.perf_counter() - started)

    if stream:
        from sse_starlette.sse import EventSourceResponse

        async def chunks() -> Any:
            try:
                if chat:
                    yield json.dumps(_chunk(ident, created, served.name, {"role": "assistant", "content": ""}, None,
                                            chat))
                while True:
                    kind, value = await events.get()
                    if kind == "delta":
                        yield json.dumps(_chunk(ident, created, served.name, {"content": value} if chat else value,
                                                None, chat))
                    elif kind == "error":
                        yield json.dumps(error_body(value, "server_error"))
                        return
                    else:
                        state.metrics.tokens(served.name, value["prompt_tokens"], value["completion_tokens"])
                        await record(value)
                        yield json.dumps(_chunk(ident, created, served.name, {} if chat else "",
                                                value["finish_reason"], chat, _usage(value)))
                        yield "[DONE]"
                        return
            finally:  # the client went away (or the stream ended): free the row at its next token
                job.cancelled.set()

        return EventSourceResponse(chunks(), ping=15)
    try:
        while True:
            kind, value = await events.get()
            if kind == "error":
                raise ApiError(500, value, "server_error")
            if kind == "done":
                break
    finally:
        job.cancelled.set()
    state.metrics.tokens(served.name, value["prompt_tokens"], value["completion_tokens"])
    await record(value)
    choice: dict[str, Any] = {"index": 0, "finish_reason": value["finish_reason"], "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": value["text"]}
    else:
        choice["text"] = value["text"]
    return {"id": ident, "object": "chat.completion" if chat else "text_completion", "created": created,
            "model": served.name, "choices": [choice], "usage": _usage(value)}


def _chunk(ident: str, created: int, model: str, delta: Any, finish: str | None, chat: bool,
           usage: dict[str, int] | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
    if chat:
        choice["delta"] = delta
    else:
        choice["text"] = delta
    body = {"id": ident, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
            "model": model, "choices": [choice]}
    if usage:
        body["usage"] = usage
    return body


def _usage(result: dict[str, Any]) -> dict[str, int]:
    return {"prompt_tokens": result["prompt_tokens"], "completion_tokens": result["completion_tokens"],
            "total_tokens": result["prompt_tokens"] + result["completion_tokens"]}


def _label_and_record(state: State, served: Any, body: ClassifyRequest) -> list[dict[str, Any]]:
    """The labels, and with a prediction log each input's row: its id comes back with its result."""
    started = time.perf_counter()
    result = _label(served, body, state.limits)
    if state.recorder is not None:
        texts = [body.question or ""] if served.task.inputs == ("question", "context") else \
            ([body.input] if isinstance(body.input, str) else list(body.input or []))
        ids = state.recorder.record_labels(served.name, "/v1/classify", texts, result, time.perf_counter() - started)
        if ids is not None:
            result = [{"id": ident, **item} for ident, item in zip(ids, result)]
    return result


def _label(served: Any, body: ClassifyRequest, limits: Limits) -> list[dict[str, Any]]:
    """Labels, entities or an answer span, from the run's predictor (one call at a time per model)."""
    task = served.task
    with served.lock:
        if task.inputs == ("question", "context"):
            if not body.question or not body.context:
                raise ApiError(422, "question and context: a question-answering model needs both",
                               "invalid_request_error", "invalid_value")
            answer = served.predictor.answer([body.question], [body.context])[0]
            return [{"index": 0, **answer}]
        texts = [body.input] if isinstance(body.input, str) else list(body.input or [])
        if not texts:
            raise ApiError(422, "input: give a text or a list of texts", "invalid_request_error", "invalid_value")
        if len(texts) > limits.max_batch_texts:
            raise ApiError(413, f"input: {len(texts)} texts, over the limit of {limits.max_batch_texts} per request",
                           "invalid_request_error", "request_too_large")
        if task.per_token_head:
            return [{"index": i, "entities": entities(text, tags["tags"])}
                    for i, (text, tags) in enumerate(zip(texts, served.predictor.predict(texts)))]
        return [{"index": i, **result} for i, result in enumerate(served.predictor.predict(texts))]


def entities(text: str, tags: list[str]) -> list[dict[str, Any]]:
    """BIO tags of the whitespace-separated words of ``text`` as entities with character offsets (an I- tag that
    does not continue an entity of its type starts one, as seqeval reads it)."""
    import re

    found: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for match, tag in zip(re.finditer(r"\S+", text), tags):
        kind = tag[2:]
        if tag.startswith("B-") or (tag.startswith("I-") and (current is None or current["type"] != kind)):
            current = {"type": kind, "start": match.start(), "end": match.end()}
            found.append(current)
        elif tag.startswith("I-"):
            current["end"] = match.end()
        else:
            current = None
    return [{"text": text[e["start"]:e["end"]], **e} for e in found]
