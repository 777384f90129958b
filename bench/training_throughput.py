"""Training throughput: the project's full and LoRA paths against the plain loops, same run.

A thin wrapper over `python -m sovereign_training bench`; every option is the same, e.g.

    python bench/training_throughput.py                      # Llama-3.2-1B shape, on a GPU
    python bench/training_throughput.py --preset tiny        # CPU smoke test
    python bench/training_throughput.py --ray-overhead       # Ray Train vs the same loop, CPU
"""

from __future__ import annotations

import sys

from sovereign_training.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
