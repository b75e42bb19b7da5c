"""After training: merge, GGUF, quantization and pruning of a run's model, read from its run folder."""
