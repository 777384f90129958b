"""`python -m sovereign_operator`: run the operator."""

import sys

from .k8s import keep_kubernetes_client_out

keep_kubernetes_client_out()

from .main import main  # noqa: E402  (after the line above: Kopf is imported here)

sys.exit(main())
