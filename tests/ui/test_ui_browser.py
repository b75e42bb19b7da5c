"""``tuneforge ui`` driven in a real browser (playwright with Debian's chromium), walking the whole loop on tiny
models: fill the New-run form, preview the data, validate (a bad value gets the CLI's own line), launch, watch the
curve get points until the run finishes, find it in Runs and compare it with another run, then serve a tiny
generative run and chat with it, the answer streamed. One UI server, one browser and one test that walks the
pages in order (each step a function below): tests sharing a browser must run in one process, and with pytest 9
pytest-xdist's xdist_group no longer keeps tests together. A screenshot of each page is saved (into
$TUNEFORGE_UI_SCREENSHOTS when set: docs/ui/ holds one such set)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urljoin

import pytest

from conftest import generative_config, make_chat_rows, tiny_config

CHROMIUM = next((Path(p) for p in ("/usr/bin/chromium", shutil.which("chromium")) if p and Path(p).exists()), None)
VIEWPORT = {"width": 1280, "height": 800}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_bert, tiny_csv, tiny_llama):
    """A workspace with the tiny models and data, a finished classification run to compare with and a chat run to
    serve (its answers start with a fixed phrase the tiny model learns, so it answers in many visible pieces)."""
    from tuneforge.config import load_config
    from tuneforge.pipelines.finetune import finetune

    root = tmp_path_factory.mktemp("ui-workspace")
    shutil.copytree(tiny_bert, root / "models" / "tiny-bert")
    shutil.copytree(tiny_llama, root / "models" / "tiny-llama")
    (root / "data").mkdir()
    shutil.copy(tiny_csv, root / "data" / "topics.csv")
    rows = make_chat_rows()
    for row in rows:
        row["messages"][-1]["content"] = f"the answer is {row['messages'][-1]['content']}, thanks for asking"
    (root / "data" / "chat.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    other = tiny_config(str(root / "models" / "tiny-bert"), root / "data" / "topics.csv", train={"epochs": 3},
                        method={"name": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
                        evaluation={"baselines": ["majority"]}, tracking={"dir": str(root / "runs" / "mlflow")})
    finetune(load_config({**other, "name": "tiny-b"}), output=root / "runs" / "tiny-b", log=lambda _: None)
    chat = generative_config(str(root / "models" / "tiny-llama"), root / "data" / "chat.jsonl",
                             evaluation={"baselines": []})
    finetune(load_config(chat), output=root / "runs" / "chat-a", log=lambda _: None)
    return root


@pytest.fixture(scope="module")
def ui_url(workspace):
    from tuneforge.serve.server import free_port

    port = free_port()
    console = open(workspace / "ui-console.log", "w", encoding="utf-8")  # noqa: SIM115 - closed below
    process = subprocess.Popen([sys.executable, "-m", "tuneforge.cli", "ui", "--workspace", str(workspace), "--port",
                                str(port)], stdout=console, stderr=subprocess.STDOUT, cwd=workspace)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            break
        except OSError:
            assert process.poll() is None and time.time() < deadline, \
                (workspace / "ui-console.log").read_text()[-3000:]
            time.sleep(0.3)
    yield url
    process.send_signal(signal.SIGTERM)  # the UI stops the runs and servers it started, then itself
    try:
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        console.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = Path(os.environ.get("TUNEFORGE_UI_SCREENSHOTS") or tmp_path_factory.mktemp("ui-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def page(ui_url):
    if CHROMIUM is None:
        pytest.skip("no Chromium (not at /usr/bin/chromium, none on PATH): scripts/ensure-chromium.sh installs "
                    "Debian's chromium package")
    sync_api = pytest.importorskip("playwright.sync_api")
    sync_api.expect.set_options(timeout=60_000)  # a run or a server starts in seconds; a busy machine takes longer
    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        context = browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(60_000)
        context.set_default_navigation_timeout(60_000)
        tab = context.new_page()
        tab.elsewhere = []  # every request that left the machine (the page must work offline)
        tab.on("request", lambda r: None if r.url.startswith((ui_url, "data:", "blob:", "http://127.0.0.1:"))
               else tab.elsewhere.append(r.url))
        tab.goto(ui_url)
        tab.wait_for_selector("#new-validate")
        yield tab
        browser.close()


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def fill(page, key, value):
    field = f"#field-{key.replace('.', '-')}"
    page.locator(f"{field} textarea, {field} input").first.fill(str(value))


def pick(page, elem_id, option):
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=option).click()


def cli_line(workspace, *args):
    done = subprocess.run([sys.executable, "-m", "tuneforge.cli", *args], cwd=workspace, capture_output=True, text=True)
    return next(line for line in done.stderr.splitlines() if line.startswith("error:"))


def new_run_form_previews_the_data_and_validates_with_the_clis_lines(page, workspace, shots):
    fill(page, "name", "tiny-ui")
    fill(page, "model.name", "models/tiny-bert")
    pick(page, "data-picker", "data/topics.csv")  # sets data.path and previews the file
    expect(page.locator("#data-facts")).to_contain_text("label counts: sport: 40, food: 40, tech: 40")
    expect(page.locator("#data-facts")).to_contain_text("layout: labelled")
    expect(page.locator("#field-data-path textarea")).to_have_value("data/topics.csv")
    for key, value in {"data.max_length": 16, "method.r": 4, "method.alpha": 8, "method.dropout": 0.0,
                       "train.batch_size": 8, "train.learning_rate": 0.03, "train.epochs": -1}.items():
        fill(page, key, value)
    page.click("#new-validate")
    expect(page.locator("#new-status")).to_contain_text("error:")
    assert page.locator("#new-status").inner_text().strip() == cli_line(workspace, "config", "validate",
                                                                          "configs/tiny-ui.yaml")
    fill(page, "data.path", "/etc/hostname")
    page.click("#new-validate")
    expect(page.locator("#new-status")).to_contain_text("error: data.path '/etc/hostname' is outside the workspace")
    fill(page, "data.path", "data/topics.csv")
    fill(page, "train.epochs", 10)
    page.click("#new-validate")
    expect(page.locator("#new-status")).to_contain_text("configs/tiny-ui.yaml: valid (")
    expect(page.locator("#new-yaml")).to_contain_text("learning_rate: 0.03")
    expect(page.locator("#new-download")).to_be_visible()
    assert "traceback" not in page.content().lower()
    page.evaluate("window.scrollTo(0, 100)")  # the model, the data file and its preview
    page.wait_for_timeout(300)
    page.screenshot(path=shots / "new-run.png")


def launch_and_watch_the_curve_grow_until_the_report(page, shots):
    page.click("#new-launch")
    expect(page.get_by_role("tab", name="Launch and watch")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#watch-points")).to_contain_text(re.compile(r"curve points: [1-9]\d* training loss"),
                                                          timeout=120_000)
    expect(page.locator("#watch-result")).to_contain_text("open report.html", timeout=120_000)
    expect(page.locator("#watch-progress")).to_contain_text(re.compile(r"finished: step \d+/110 \(\d+%\)"))
    expect(page.locator("#watch-log textarea")).to_have_value(re.compile(r"verdict: "))
    page.wait_for_timeout(500)  # the plots' last redraw
    page.screenshot(path=shots / "watch.png")


def runs_lists_the_run_and_compares_two(page, shots):
    page.get_by_role("tab", name="Runs").click()
    expect(page.locator("#runs-table")).to_contain_text("tiny-ui-")
    expect(page.locator("#runs-table")).to_contain_text(re.compile(r"\d\.\d{4} \[\d\.\d{4}, \d\.\d{4}\]"))
    page.locator("#runs-choose label", has_text="tiny-ui-").locator("input").check()
    page.locator("#runs-choose label", has_text="tiny-b").locator("input").check()
    page.click("#runs-compare")
    compared = page.locator("#runs-compared")
    expect(compared).to_contain_text("macro_f1_majority")
    expect(compared).to_contain_text("method.r")  # the setting that differs: 4 here, 8 in tiny-b
    assert re.search(r"tiny-ui-\S+.*tiny-b", compared.inner_text(), re.S)
    expect(page.locator("#runs-loss")).to_be_visible()
    pick(page, "runs-report-run", re.compile("tiny-b"))
    link = page.locator("#runs-report-link a")
    expect(link).to_have_text("open tiny-b's report.html")
    report = page.request.get(urljoin(page.url, link.get_attribute("href")))
    assert report.ok and "<html" in report.text()[:500].lower()
    compared.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.screenshot(path=shots / "runs.png")


def chat_with_a_served_run_streams_the_answer(page, shots):
    page.get_by_role("tab", name="Chat and try").click()
    pick(page, "chat-run", re.compile(r"chat-a \(writes text\)"))
    page.click("#chat-serve")
    expect(page.locator("#chat-status")).to_contain_text("ready: http://127.0.0.1:", timeout=120_000)
    expect(page.locator("#chat-model input")).to_have_value("chat-a")
    fill_chat = page.locator("#chat-max-tokens input")
    fill_chat.fill("12")
    page.evaluate("""() => {  // every text the answer shows while it streams in
        window.seen = new Set();
        new MutationObserver(() => {
            const bubbles = document.querySelectorAll('#chat-bot .message-row.bot-row, #chat-bot .bot');
            if (bubbles.length) window.seen.add(bubbles[bubbles.length - 1].innerText);
        }).observe(document.querySelector('#chat-bot'), {subtree: true, childList: true, characterData: true});
    }""")
    page.locator("#chat-message textarea").fill("17 plus one, goal?")
    page.click("#chat-send")
    expect(page.locator("#chat-status")).to_contain_text(re.compile(r"chat-a: answered \((\d+) pieces streamed\)"))
    pieces = int(re.search(r"\((\d+) pieces", page.locator("#chat-status").inner_text()).group(1))
    assert pieces >= 2
    seen = [text.strip() for text in page.evaluate("Array.from(window.seen)")]
    final = max(seen, key=len)
    assert final.startswith("the answer is")  # what the run learned to begin its answers with
    assert [text for text in seen if text and len(text) < len(final) and final.startswith(text)], seen  # shown growing
    expect(page.locator("#chat-bot")).to_contain_text("17 plus one, goal?")
    page.screenshot(path=shots / "chat.png")


def test_the_whole_loop_in_a_browser(page, workspace, shots):
    new_run_form_previews_the_data_and_validates_with_the_clis_lines(page, workspace, shots)
    launch_and_watch_the_curve_grow_until_the_report(page, shots)
    runs_lists_the_run_and_compares_two(page, shots)
    chat_with_a_served_run_streams_the_answer(page, shots)
    assert page.elsewhere == []  # the page works offline: nothing was fetched from the internet
