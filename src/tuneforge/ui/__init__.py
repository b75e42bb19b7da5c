"""``tuneforge ui``: a web UI (Gradio Blocks) over the same commands and run folders as the CLI: a new run's config
from a form generated from the schema, the run launched and watched, runs compared, and a served run to chat with.

Only ``tuneforge.ui.server`` and the page modules import Gradio (the optional ``ui`` extra); the others
(workspace, form, preview, jobs, runs, chat) are plain Python over tuneforge's own functions and subprocesses.
"""
