"""`python -m sovereign_operator`: run the operator."""

import sys

from .k8s import keep_kubernetes_client_out


def _run() -> int:
    keep_kubernetes_client_out()
    from .main import main  # after the line above: Kopf is imported here

    return main(sys.argv[1:])


sys.exit(_run())
