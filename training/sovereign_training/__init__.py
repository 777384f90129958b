"""Sovereign AI training data plane: fine-tuning, model fetch, CPU serving, benchmarks."""
