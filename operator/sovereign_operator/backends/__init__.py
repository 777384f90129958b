"""Execution backends: where a FineTuneJob's Ray job runs, and how its state is read back."""
