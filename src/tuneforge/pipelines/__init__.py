"""User-facing jobs, each a readable function: finetune, predict, quickstart."""
