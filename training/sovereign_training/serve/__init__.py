"""The CPU model server: an OpenAI-compatible HTTP API over a local transformers model.

It is the ModelDeployment runtime ``transformers``. Importing this package is cheap; torch and
transformers are imported only when ``main`` starts a server.
"""

from sovereign_training.serve.cli import DESCRIPTION, add_serve_arguments, main, run_serve

__all__ = ["DESCRIPTION", "add_serve_arguments", "main", "run_serve"]
