"""Planning a run from its config alone: peak memory, FLOPs per token and time, before anything loads."""
