"""tuneforge serve on a free loopback port, used through the real ``openai`` client: chat (plain and streamed),
completions and models on tiny generative runs; two LoRA runs on one base, batched together, each equal to itself
served alone; classify equal to predict; keys, limits, metrics and concurrent clients."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest

from tuneforge.config import load_config
from tuneforge.pipelines.finetune import finetune
from tuneforge.serve.limits import Limits
from tuneforge.serve.server import serve

from conftest import generative_config, tiny_config

openai = pytest.importorskip("openai")
PROMPT = "17 plus one, goal?"


@pytest.fixture(scope="module")
def chat_runs(tiny_llama, chat_jsonl, tmp_path_factory):
    """Two LoRA chat runs on the same tiny base: one trained (it learns to answer briefly), one that barely moved
    from the random base (it rambles until max_tokens)."""
    root = tmp_path_factory.mktemp("serve-runs")
    runs = []
    for name, epochs, rate in (("chat-a", 3, 2e-2), ("chat-b", 1, 1e-6)):
        config = generative_config(tiny_llama, chat_jsonl, train={"epochs": epochs, "learning_rate": rate},
                                   evaluation={"baselines": []})
        runs.append(finetune(load_config(config), output=root / name, log=lambda _: None).run_dir)
    return runs


@pytest.fixture(scope="module")
def label_run(tiny_bert, tiny_csv, tmp_path_factory):
    config = load_config(tiny_config(tiny_bert, tiny_csv, train={"epochs": 4}, evaluation={"baselines": ["majority"]}))
    return finetune(config, output=tmp_path_factory.mktemp("serve-label") / "topics", log=lambda _: None).run_dir


@pytest.fixture(scope="module")
def server(chat_runs, label_run):
    keys = ["key-one", "key-two"]
    with serve([*chat_runs, label_run], api_keys=keys, max_batch=8, max_wait=0.05,
               limits=Limits(max_body_bytes=20_000, max_tokens=32, requests_per_minute=1000)) as running:
        running.wait_ready()
        yield running


def client(server, key="key-one"):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=120)


def post(server, path, body, key="key-one"):
    request = urllib.request.Request(f"{server.url}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_models_lists_every_run_and_the_shared_base(server, chat_runs, label_run):
    names = {m.id: m for m in client(server).models.list().data}
    assert {"chat-a", "chat-b", "topics"} <= set(names) and len(names) == 4  # + the base of the two chat runs
    base = next(n for n in names if n not in ("chat-a", "chat-b", "topics"))
    assert base.startswith("tiny-llama") and names["chat-a"].model_extra["task"] == "causal-lm"


def test_chat_completion_equals_the_run_generating_alone(server, chat_runs):
    from tuneforge.pipelines.generate import load_generator

    answer = client(server).chat.completions.create(model="chat-a", messages=[{"role": "user", "content": PROMPT}],
                                                     max_tokens=6)
    alone = load_generator(chat_runs[0], max_new_tokens=6).generate([PROMPT])[0]
    assert answer.choices[0].message.content.strip() == alone["output"]
    assert answer.choices[0].finish_reason == ("stop" if alone["ended"] else "length")
    assert answer.usage.completion_tokens == alone["new_tokens"] and answer.usage.prompt_tokens > 5


def test_streaming_gives_the_same_text_in_pieces(server):
    messages = [{"role": "user", "content": PROMPT}]
    whole = client(server).chat.completions.create(model="chat-b", messages=messages, max_tokens=8)
    pieces, finish = [], None
    for chunk in client(server).chat.completions.create(model="chat-b", messages=messages, max_tokens=8, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert "".join(pieces) == whole.choices[0].message.content and len(pieces) >= 2
    assert finish == whole.choices[0].finish_reason


def test_completions(server):
    result = client(server).completions.create(model="chat-a", prompt="12 plus one", max_tokens=5)
    assert result.object == "text_completion" and result.usage.completion_tokens <= 5
    assert isinstance(result.choices[0].text, str)


def test_two_adapters_on_one_base_answer_by_model_name_batched_or_alone(server, chat_runs):
    from tuneforge.pipelines.generate import load_generator

    prompts = [f"{n} plus one, goal?" for n in (17, 230, 64, 5)]
    results: dict[tuple[str, str], str] = {}

    def ask(model, prompt):  # all at once: the worker batches rows of both adapters (and the base) together
        answer = client(server).chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                         max_tokens=6)
        results[(model, prompt)] = answer.choices[0].message.content

    threads = [threading.Thread(target=ask, args=(m, p)) for p in prompts for m in ("chat-a", "chat-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for model, run in zip(("chat-a", "chat-b"), chat_runs):
        alone = load_generator(run, max_new_tokens=6).generate(prompts)
        # the same tokens (generate strips surrounding whitespace for display; the API returns the text as generated)
        assert [results[(model, p)].strip() for p in prompts] == [a["output"] for a in alone]
    assert any(results[("chat-a", p)] != results[("chat-b", p)] for p in prompts)
    batches = server.state.metrics.registry.get_sample_value(
        "tuneforge_batch_size_sum", {"engine": next(e.name for e in server.state.catalog.engines)})
    count = server.state.metrics.registry.get_sample_value(
        "tuneforge_batch_size_count", {"engine": next(e.name for e in server.state.catalog.engines)})
    assert batches / count > 1  # requests were generated together


def test_classify_equals_predict(server, label_run):
    from tuneforge.pipelines.predict import load_predictor

    texts = ["the striker scored a goal", "bread and cheese soup", "a new phone chip"]
    status, body = post(server, "/v1/classify", {"model": "topics", "input": texts})
    assert status == 200
    expected = load_predictor(label_run).predict(texts)
    assert [{k: row[k] for k in ("label", "probabilities")} for row in body["data"]] == expected


def test_errors_are_openai_style(server):
    status, body = post(server, "/v1/chat/completions", {"model": "chat-a", "messages": [{"role": "user",
                                                                                         "content": "hi"}]}, key="bad")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client(server, key="nope").models.list()
    with pytest.raises(openai.NotFoundError, match="model 'nobody' does not exist"):
        client(server).chat.completions.create(model="nobody", messages=[{"role": "user", "content": "hi"}])
    status, body = post(server, "/v1/chat/completions", {"model": "chat-a", "messages": [
        {"role": "user", "content": "x" * 30_000}]})
    assert status == 413 and body["error"]["code"] == "request_too_large"
    status, body = post(server, "/v1/chat/completions", {"model": "chat-a", "max_tokens": 500,
                                                         "messages": [{"role": "user", "content": "hi"}]})
    assert status == 422 and "over the limit of 32" in body["error"]["message"]
    status, body = post(server, "/v1/chat/completions", {"model": "chat-a", "messages": []})
    assert status == 422 and body["error"]["type"] == "invalid_request_error"
    status, body = post(server, "/v1/classify", {"model": "chat-a", "input": "hi"})
    assert status == 400 and body["error"]["code"] == "wrong_endpoint"


def test_rate_limit_per_key(chat_runs):
    with serve(chat_runs[:1], api_keys=["k"], limits=Limits(requests_per_minute=2)) as running:
        running.wait_ready()
        assert [post(running, "/v1/classify", {"model": "x"}, key="k")[0] for _ in range(3)] == [404, 404, 429]
        status, body = post(running, "/v1/classify", {"model": "x"}, key="k")
        assert status == 429 and body["error"]["code"] == "rate_limit_exceeded"
        with urllib.request.urlopen(f"{running.url}/health") as response:  # not behind the key or the limit
            assert response.status == 200


def test_sixteen_concurrent_clients_and_the_metrics_count_them(server):
    from prometheus_client.parser import text_string_to_metric_families

    def count():
        with urllib.request.urlopen(f"{server.url}/metrics") as response:
            families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
        return sum(s.value for s in families["tuneforge_requests"].samples
                   if s.name == "tuneforge_requests_total" and s.labels["model"] == "chat-b"
                   and s.labels["status"] == "200")

    before = count()
    answers: list[str] = []
    errors: list[Exception] = []

    def ask(n):
        try:
            answer = client(server, key=("key-one", "key-two")[n % 2]).chat.completions.create(
                model="chat-b", messages=[{"role": "user", "content": f"{n} plus one, goal?"}], max_tokens=4)
            answers.append(answer.choices[0].message.content)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(answers) == 16
    assert count() - before == 16


def test_503_while_loading_then_ready(chat_runs, monkeypatch):
    from tuneforge.serve.server import Server

    release = threading.Event()
    original = Server.load

    def slow_load(self):
        release.wait(60)
        original(self)

    monkeypatch.setattr(Server, "load", slow_load)
    with serve(chat_runs[1:]) as running:
        status, body = post(running, "/v1/chat/completions", {"model": "chat-b", "messages": [
            {"role": "user", "content": "hi"}]})
        assert status == 503 and body["error"]["code"] == "loading"
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(f"{running.url}/ready")
        assert not_ready.value.code == 503
        release.set()
        running.wait_ready()
        with urllib.request.urlopen(f"{running.url}/ready") as response:
            assert "chat-b" in json.loads(response.read())["models"]


def test_entities_with_character_offsets():
    from tuneforge.serve.app import entities

    text = "Barack  Obama visited New York City today"
    tags = ["B-person", "I-person", "O", "B-loc", "I-loc", "I-loc", "O"]
    assert entities(text, tags) == [{"text": "Barack  Obama", "type": "person", "start": 0, "end": 13},
                                    {"text": "New York City", "type": "loc", "start": 22, "end": 35}]
    # an I- tag after O (or after another type) starts an entity, as seqeval reads it
    assert [e["text"] for e in entities("a b c", ["I-x", "O", "I-x"])] == ["a", "c"]


def test_a_full_queue_answers_429_and_a_client_that_leaves_frees_its_row(chat_runs):
    import time

    with serve(chat_runs[1:], max_batch=1, limits=Limits(max_queue=1, max_tokens=200)) as running:
        running.wait_ready()
        statuses: list[int] = []

        def ask():
            statuses.append(post(running, "/v1/chat/completions", {
                "model": "chat-b", "max_tokens": 32, "messages": [{"role": "user", "content": "go on"}]})[0])

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert 200 in statuses and 429 in statuses and set(statuses) <= {200, 429}

        engine = running.state.catalog.engines[0]
        # a long answer (200 tokens, the tiny model rambles): the client is gone long before it would end
        stream = client(running).chat.completions.create(model="chat-b", max_tokens=200, stream=True,
                                                         messages=[{"role": "user", "content": "go on"}])
        next(iter(stream))  # the first chunk arrives, then the client goes away
        stream.close()
        deadline = time.time() + 30
        while engine.cancelled_rows == 0 and time.time() < deadline:
            time.sleep(0.05)
        assert engine.cancelled_rows == 1 and engine.depth() == 0


def test_limits_that_a_client_cannot_get_around(server):
    import http.client

    from tuneforge.serve.engine import _safe_prefix
    from tuneforge.serve.limits import RateLimiter

    status, body = post(server, "/v1/chat/completions", {"model": "chat-a", "stop": [""],
                                                         "messages": [{"role": "user", "content": "hi"}]})
    assert status == 422 and "stop: at most 4 strings" in body["error"]["message"]
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)  # a chunked body has no Content-Length
    connection.putrequest("POST", "/v1/chat/completions")
    for name, value in (("Transfer-Encoding", "chunked"), ("Content-Type", "application/json"),
                        ("Authorization", "Bearer key-one")):
        connection.putheader(name, value)
    connection.endheaders()
    connection.send(b"2\r\n{}\r\n0\r\n\r\n")
    response = connection.getresponse()
    assert response.status == 411 and json.loads(response.read())["error"]["code"] == "length_required"
    for n in range(3):  # unknown paths share one metrics series, whatever they are
        post(server, f"/v1/nothing-{n}", {})
    with urllib.request.urlopen(f"{server.url}/metrics") as metrics:
        text = metrics.read().decode()
    assert "nothing-1" not in text and 'endpoint="other"' in text
    # what was streamed is a prefix of the final text, whichever stop string completes
    assert _safe_prefix("ab\n#", ["###", "\n###"]) == "ab" and _safe_prefix("ab", ["###"]) == "ab"
    assert RateLimiter(0).take("k") == 0.0  # 0 requests per minute means no limit, not a division by zero
