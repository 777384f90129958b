"""The model's lifecycle in the server: loading in the background, then ready (or failed)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sovereign_training.serve.engine import Engine

log = logging.getLogger(__name__)


class ModelState:
    """Holds the Engine once a background thread has loaded it.

    Loading in the background lets the server answer /health (503, "loading") while a large
    model loads, so a liveness probe does not kill a pod that is merely slow to start.
    """

    def __init__(self, loader: Callable[[], Engine]) -> None:
        self._loader = loader
        self._ready = threading.Event()
        self.engine: Engine | None = None
        self.error: str | None = None

    def start(self, on_failure: Callable[[BaseException], None]) -> threading.Thread:
        thread = threading.Thread(
            target=self._load, args=(on_failure,), name="sovai-load-model", daemon=True
        )
        thread.start()
        return thread

    def _load(self, on_failure: Callable[[BaseException], None]) -> None:
        try:
            self.engine = self._loader()
        except BaseException as exc:
            self.error = str(exc) or type(exc).__name__
            log.error("loading the model failed: %s", self.error)
            on_failure(exc)
            return
        self._ready.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)
