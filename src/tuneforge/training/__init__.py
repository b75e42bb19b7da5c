"""Training: the Trainer-based engine and its callbacks."""
