"""Request and reply values passed between the HTTP server and the API handlers.

Handlers are plain functions `handler(testbed, request) -> Reply`; they never see sockets, which keeps
them easy to test and keeps HTTP details (negotiation, faults, Date header) in `http_server.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from g5k_testbed.auth import AuthenticationFailed, can_write
from g5k_testbed.testbed import ApiError

FORBIDDEN = "You are not authorized to access this resource"


@dataclass
class Request:
    method: str
    path: str  # without the version prefix, e.g. /sites/rennes
    prefix: str  # the version prefix the client used: /3.0, /stable or /sid ("" for admin paths)
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    base_url: str  # scheme://host:port, for absolute Location headers
    params: dict[str, str] = field(default_factory=dict)  # path parameters from the route
    login: str = "anonymous"

    def flag(self, name: str, default: bool) -> bool:
        """A yes/no query parameter (`yes`, `true`, `1` are true)."""
        value = self.query.get(name)
        if value is None:
            return default
        return value.strip().lower() in ("yes", "true", "1", "on")

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def json_body(self) -> Any:
        try:
            return json.loads(self.body.decode() or "null")
        except (UnicodeDecodeError, ValueError) as exc:
            raise ApiError(400, f"Bad Request: the body is not valid JSON ({exc})") from exc

    def form_or_json(self) -> dict[str, Any]:
        """A POST body as g5k-api accepts it: JSON or application/x-www-form-urlencoded."""
        if self.content_type == "application/x-www-form-urlencoded":
            from urllib.parse import parse_qs

            parsed = parse_qs(self.body.decode(), keep_blank_values=True)
            out: dict[str, Any] = {}
            for key, values in parsed.items():
                name = key[:-2] if key.endswith("[]") else key
                out[name] = values if key.endswith("[]") or len(values) > 1 else values[0]
            return out
        data = self.json_body()
        if not isinstance(data, dict):
            raise ApiError(400, "Bad Request: the body must be a JSON object")
        return data

    def require_writer(self) -> None:
        if not can_write(self.login):
            raise ApiError(403, FORBIDDEN)

    def url(self, path: str) -> str:
        return f"{self.base_url}{self.prefix}{path}"


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON; str -> text/plain; None -> empty
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None  # forced type (e.g. text/plain for key files)
    cache: bool = False  # reference data: ETag and Cache-Control like the real API


__all__ = ["FORBIDDEN", "ApiError", "AuthenticationFailed", "Reply", "Request"]
