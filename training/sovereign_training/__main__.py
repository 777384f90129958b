"""`python -m sovereign_training {train,fetch,bench,tiny}`."""

from __future__ import annotations

import os
import sys

from .cli import main

if __name__ == "__main__":
    # Ray prefixes forwarded worker output with "(RayTrainWorker pid=..)"; without it the
    # SOVAI_PROGRESS lines start their line in the job log. Read when ray is first imported.
    os.environ.setdefault("RAY_DISABLE_WORKER_LOG_PREFIX", "1")
    sys.exit(main())
