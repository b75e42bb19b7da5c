"""tuneforge serve: trained runs behind an OpenAI-compatible HTTP API (see server.py)."""
