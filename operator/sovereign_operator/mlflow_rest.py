"""MLflow's REST API: the few reads the operator and ``sovai audit`` make, over plain HTTP.

The operator's process never imports the mlflow package (its import alone would cost the
operator more memory than it keeps for thousands of jobs); ``requests`` is loaded already by
the Kubernetes client. Credentials are MLflow's own variables, read as its clients read them:
``MLFLOW_TRACKING_TOKEN`` (a bearer token), else ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from sovereign_training.tracking import redact_uri

HTTP_TIMEOUT_S = 30.0
_NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"


class MlflowError(Exception):
    """MLflow could not be reached, or refused a request; the message says which, and never
    carries a credential."""


@dataclass(frozen=True)
class MlflowRest:
    """One tracking server, with the credentials to read it."""

    tracking_uri: str
    # Kept out of repr: an object printed in a log line must not carry them.
    token: str | None = field(default=None, repr=False)
    username: str | None = field(default=None, repr=False)
    password: str = field(default="", repr=False)
    timeout: float = HTTP_TIMEOUT_S

    @classmethod
    def from_environment(
        cls,
        tracking_uri: str,
        environ: Mapping[str, str] = os.environ,
        timeout: float = HTTP_TIMEOUT_S,
    ) -> MlflowRest:
        """The server at ``tracking_uri`` (http or https; ValueError otherwise), with MLflow's
        credential variables from ``environ``."""
        if not tracking_uri.startswith(("http://", "https://")):
            raise ValueError(
                f"MLflow tracking URI {redact_uri(tracking_uri)!r}: only http(s) can be read here"
            )
        return cls(
            tracking_uri,
            token=environ.get("MLFLOW_TRACKING_TOKEN") or None,
            username=environ.get("MLFLOW_TRACKING_USERNAME") or None,
            password=environ.get("MLFLOW_TRACKING_PASSWORD", ""),
            timeout=timeout,
        )

    @property
    def where(self) -> str:
        """The server as messages name it (no user:password, no query)."""
        return f"MLflow at {redact_uri(self.tracking_uri)}"

    def get(self, endpoint: str, params: Mapping[str, str], what: str) -> dict[str, Any] | None:
        """GET ``/api/2.0/mlflow/<endpoint>``: its JSON answer, or None when MLflow has no such
        resource. MlflowError when it cannot be read; ``what`` names the request there."""
        answer = self._call("GET", f"api/2.0/mlflow/{endpoint}", what, params=params)
        if answer is None:
            return None
        return self._json(answer, what)

    def post(self, endpoint: str, body: Mapping[str, Any], what: str) -> dict[str, Any]:
        """POST ``/api/2.0/mlflow/<endpoint>`` (searches); its JSON answer."""
        answer = self._call("POST", f"api/2.0/mlflow/{endpoint}", what, body=body)
        if answer is None:
            raise MlflowError(f"{self.where} has no {what}")
        return self._json(answer, what)

    def artifact(self, run_id: str, path: str) -> bytes | None:
        """One artifact of a run, as the server reads it from its artifact store (its own, or
        the one it proxies: ``get-artifact``, the route MLflow's UI reads artifacts by); None
        when the run has no such artifact."""
        what = f"artifact {path} of run {run_id}"
        answer = self._call("GET", "get-artifact", what, params={"run_id": run_id, "path": path})
        return None if answer is None else answer.content

    def _call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> requests.Response | None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        auth = (self.username, self.password) if self.username and not self.token else None
        url = f"{self.tracking_uri.rstrip('/')}/{path}"
        try:
            answer = requests.request(
                method,
                url,
                params=params,
                json=body,
                headers=headers,
                auth=auth,
                timeout=self.timeout,
            )
        except requests.RequestException as error:
            # requests names the URL it tried, which may carry user:password.
            reason = str(error).replace(self.tracking_uri, redact_uri(self.tracking_uri))
            raise MlflowError(f"cannot reach {self.where} ({what}): {reason}") from None
        if answer.status_code == 404 or _NOT_FOUND in answer.text[:1000]:
            return None
        if not answer.ok:
            raise MlflowError(
                f"{self.where} answered {answer.status_code} for {what}: {answer.text[:300]}"
            )
        return answer

    def _json(self, answer: requests.Response, what: str) -> dict[str, Any]:
        try:
            found: Any = answer.json()
        except ValueError:
            raise MlflowError(f"{self.where} answered {what} with no JSON") from None
        if not isinstance(found, dict):
            raise MlflowError(f"{self.where} answered {what} with no JSON object")
        return found
