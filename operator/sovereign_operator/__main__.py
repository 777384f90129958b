"""`python -m sovereign_operator`: run the operator."""

import sys

from .main import main

sys.exit(main(sys.argv[1:]))
