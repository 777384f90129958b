"""The operator's own API client: credentials, generic CRUD over JSON, ensure, Events."""

import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType


class _Refused(MetaPathFinder):
    """Answers ``import kubernetes`` (and its submodules) with ModuleNotFoundError."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname == "kubernetes" or fullname.startswith("kubernetes."):
            raise ModuleNotFoundError(f"{fullname} is kept out of the operator", name=fullname)
        return None


def keep_kubernetes_client_out() -> None:
    """Make ``import kubernetes`` fail in this process.

    Kopf imports the kubernetes client library whenever it is installed, only to recognise
    its model classes and offer its login; the operator passes plain dicts and logs in with
    ``k8s.credentials``. The library's generated classes would cost about 20 MB of resident
    memory per operator process. Call before Kopf is imported.
    """
    if not any(isinstance(finder, _Refused) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Refused())
