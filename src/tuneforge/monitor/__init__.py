"""After serving: the prediction log, drift against the run's validation split, alerts and the report."""
