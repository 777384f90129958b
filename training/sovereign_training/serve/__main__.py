"""``python -m sovereign_training.serve``: the server without the ``sovereign_training`` CLI."""

import sys

from sovereign_training.serve.cli import main

raise SystemExit(main(sys.argv[1:]))
