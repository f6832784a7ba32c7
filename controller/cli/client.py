"""The HTTP side of hubctl: a thin JSON client of the hub's REST API and its errors.

Exit codes shared by every command live here too: 0 done, 1 the API refused
(or an operation did not succeed), 2 a local problem (usage, unreadable file,
unreachable API).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

DEFAULT_API = "http://127.0.0.1:8080"

EXIT_OK, EXIT_API_ERROR, EXIT_UNREACHABLE, EXIT_LOCAL_ERROR = 0, 1, 2, 2
EXIT_NOT_SUCCEEDED = EXIT_API_ERROR


class Unreachable(Exception):
    """The API could not be contacted at all."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the hub API at {url}: {reason}")
        self.url, self.reason = url, reason


class ApiError(Exception):
    """The API answered with an error; ``problem`` is its RFC 7807 document."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(problem.get("title", f"HTTP {status}"))
        self.status, self.problem = status, problem


def invalid_response(status: int, detail: str) -> ApiError:
    """An answer hubctl cannot read (not JSON, or not the shape the API documents)."""
    return ApiError(status, {"title": "Invalid response", "status": status, "detail": detail})


class HubClient:
    """Thin JSON client; pass ``client`` or ``transport`` to redirect requests (tests)."""

    def __init__(self, base_url: str, *, client: httpx.Client | None = None,
                 transport: httpx.BaseTransport | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._owned = client is None
        self._http = client or httpx.Client(transport=transport, timeout=timeout)

    def _send(self, method: str, path: str, params: Mapping[str, Any] | None,
              **kwargs: Any) -> httpx.Response:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            resp = self._http.request(method, self.base_url + path, params=query, **kwargs)
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            raise Unreachable(self.base_url, str(exc) or type(exc).__name__) from exc
        if resp.is_error:
            raise ApiError(resp.status_code, _problem_of(resp))
        return resp

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                **kwargs: Any) -> Any:
        resp = self._send(method, path, params, **kwargs)
        if resp.status_code == 204:  # No Content
            return None
        try:
            return resp.json()
        except ValueError as exc:
            raise invalid_response(resp.status_code, f"{method} {path} did not return JSON") from exc

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def text(self, path: str, **params: Any) -> str:
        """A GET whose answer is text (an export such as Graphviz or YAML), as it came."""
        return self._send("GET", path, params).text

    def close(self) -> None:
        if self._owned:
            self._http.close()


def _problem_of(resp: httpx.Response) -> dict[str, Any]:
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "title" in doc:
        return doc
    return {"title": resp.reason_phrase or f"HTTP {resp.status_code}", "status": resp.status_code,
            "detail": resp.text.strip()[:300] or None}
