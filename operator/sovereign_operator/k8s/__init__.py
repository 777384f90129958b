"""The operator's own API client: credentials, generic CRUD over JSON, ensure, Events."""

import sys


def keep_kubernetes_client_out() -> None:
    """Make ``import kubernetes`` fail in this process.

    Kopf imports the kubernetes client library whenever it is installed, only to recognise
    its model classes and offer its login; the operator passes plain dicts and logs in with
    ``k8s.credentials``. The library's generated classes would cost about 20 MB of resident
    memory per operator process. Call before Kopf is imported.
    """
    sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]
