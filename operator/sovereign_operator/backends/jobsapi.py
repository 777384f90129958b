"""Ray's Job Submission REST API over plain HTTP (the operator image carries no ray).

Token authentication (RAY_AUTH_MODE=token, the default of `ray start --head` since Ray 2.52)
expects "Authorization: Bearer <token>". The token is never logged or put in an error.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any, cast

import requests


class JobsApiError(RuntimeError):
    """The Ray dashboard refused or failed a request (no token in the message)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class JobsApi:
    """A client for one Ray cluster's dashboard."""

    address: str
    token: str | None = None
    timeout: float = 5.0

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _request(self, method: str, path: str, body: Any = None) -> requests.Response:
        url = f"{self.address.rstrip('/')}{path}"
        try:
            response = requests.request(
                method, url, json=body, headers=self._headers(), timeout=self.timeout
            )
        except requests.RequestException as error:
            raise JobsApiError(f"{method} {url}: {type(error).__name__}") from None
        if response.status_code in (401, 403):
            raise JobsApiError(
                f"{method} {url}: HTTP {response.status_code} (token missing or wrong)",
                response.status_code,
            )
        return response

    def info(self, submission_id: str) -> dict[str, Any] | None:
        """The job's info (status, message, start_time, end_time, metadata), or None."""
        response = self._request("GET", f"/api/jobs/{submission_id}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise JobsApiError(f"job info: HTTP {response.status_code}", response.status_code)
        return cast(dict[str, Any], response.json())

    def submit(
        self,
        submission_id: str,
        entrypoint: str,
        metadata: dict[str, str],
        runtime_env: dict[str, Any] | None = None,
    ) -> None:
        """Submit once; an existing submission with this id counts as done."""
        body: dict[str, Any] = {
            "entrypoint": entrypoint,
            "submission_id": submission_id,
            "metadata": metadata,
        }
        if runtime_env:
            body["runtime_env"] = runtime_env
        response = self._request("POST", "/api/jobs/", body)
        if response.status_code == 200:
            return
        # A concurrent or earlier submit with the same id: the job exists, nothing to do.
        if self.info(submission_id) is not None:
            return
        raise JobsApiError(
            f"submit: HTTP {response.status_code}: {response.text[:300]}", response.status_code
        )

    def log_tail(self, submission_id: str, node_id: str, lines: int, limit: int) -> str:
        """The last ``lines`` lines of the job's driver log, at most ``limit`` bytes, through
        the dashboard's log API ('' while there is none): the progress line and the result
        are at the end, so a pass reads kilobytes whatever the log's length. The file is
        named on the driver's node (``node_id``, the job info's driver_node_id): asked by
        submission id, Ray 2.5x answers 500."""
        query = urllib.parse.urlencode(
            {"node_id": node_id, "filename": f"job-driver-{submission_id}.log", "lines": lines}
        )
        response = self._request("GET", f"/api/v0/logs/file?{query}")
        if response.status_code != 200:
            return ""
        return response.content[-limit:].decode("utf-8", errors="replace")

    def logs(self, submission_id: str) -> str:
        """The job's whole driver log so far ('' when there is none)."""
        response = self._request("GET", f"/api/jobs/{submission_id}/logs")
        if response.status_code != 200:
            return ""
        return str(response.json().get("logs", ""))

    def stop(self, submission_id: str) -> bool:
        """Ask the job to stop; False when there was nothing to stop."""
        response = self._request("POST", f"/api/jobs/{submission_id}/stop")
        return response.status_code == 200 and bool(response.json().get("stopped", False))
