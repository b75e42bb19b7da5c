"""The Gradio Blocks app: four pages (New run, Launch and watch, Runs, Chat and try) over one workspace."""

from __future__ import annotations

import gradio as gr

from tuneforge.ui import page_chat, page_new, page_runs, page_watch
from tuneforge.ui.shared import Context

CSS = """
.tf-progress { display: flex; align-items: center; gap: 12px; }
.tf-progress progress { width: 40%; height: 14px; }
footer { display: none !important; }
"""


def build_app(ctx: Context) -> gr.Blocks:
    with gr.Blocks(title="tuneforge") as app:
        gr.Markdown(f"## tuneforge &nbsp; <small>workspace `{ctx.workspace.root}`</small>")
        with gr.Tabs(selected="new") as tabs:
            with gr.Tab("New run", id="new", elem_id="tab-new") as new_tab:
                new = page_new.build(ctx)
            with gr.Tab("Launch and watch", id="watch", elem_id="tab-watch"):
                watch = page_watch.build(ctx)
            with gr.Tab("Runs", id="runs", elem_id="tab-runs") as runs_tab:
                runs = page_runs.build(ctx)
            with gr.Tab("Chat and try", id="chat", elem_id="tab-chat") as chat_tab:
                chat = page_chat.build(ctx)
        page_new.wire_launch(ctx, new, tabs, watch)
        new_tab.select(new["refresh"], [], new["refreshed"])
        runs_tab.select(runs["refresh"], [], runs["outputs"])
        chat_tab.select(chat["refresh"], [], [chat["run"]])
    return app
