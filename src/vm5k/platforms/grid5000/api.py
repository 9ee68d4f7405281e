"""The Grid'5000 REST API through python-grid5000, with vm5k's errors, retries and the server's clock.

Why a wrapper: python-grid5000 already retries GETs and DELETEs on 500/502/504 (5 tries), but not POSTs,
and it raises a different exception family per failure (HTTP codes, ``requests`` network errors,
exhausted retries). Here every call ends in one of:

- a result;
- `ApiError` (a PlatformError) with the HTTP status and g5k-api's one-line message, `transient` when
  another try may work (5xx, timeouts, connection failures);
- `CredentialsError` (a UsageError) on 401: the server refused the credentials (or wants some).

GETs and DELETEs are retried with vm5k's one retry policy on top of python-grid5000's own tries. POSTs
are never retried here: a POST whose reply was lost may have been executed, and only the caller knows
how to find out (jobs are looked up by name, see ``oar.py``).

Every reply's ``Date`` header is the API server's clock: `server_now` is what vm5k plans and waits on,
never the local clock. Each thread gets its own python-grid5000 client (``requests`` sessions are not
meant to be shared between threads).
"""

from __future__ import annotations

import email.utils
import logging
import threading
from collections.abc import Mapping
from typing import Any

import requests
from grid5000 import Grid5000
from grid5000.exceptions import Grid5000AuthenticationError, Grid5000Error

from vm5k.errors import PlatformError
from vm5k.platforms.grid5000.credentials import ApiConfig, CredentialsError
from vm5k.retry import RetryPolicy
from vm5k.topology import one_line

log = logging.getLogger(__name__)

TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
DEFAULT_TIMEOUT = 60.0  # seconds for one request (python-grid5000 has none by default)


class ApiError(PlatformError):
    """An API call failed: `status` is the HTTP status (None: no reply), `message` g5k-api's text."""

    def __init__(self, message: str, status: int | None = None, *, method: str = "", path: str = "") -> None:
        where = f"{method} {path}: " if method else ""
        code = f"{status} " if status is not None else ""
        super().__init__(f"Grid'5000 API: {where}{code}{message}".rstrip())
        self.status = status
        self.message = message
        self.method = method
        self.path = path

    @property
    def transient(self) -> bool:
        """True when trying again may work (server-side 5xx, timeouts, dropped connections)."""
        return self.status is None or self.status in TRANSIENT_STATUSES


def is_transient(error: BaseException) -> bool:
    return isinstance(error, ApiError) and error.transient


#: GETs and DELETEs: python-grid5000 already tried 6 times; a few more, slower, ride out longer hiccups.
API_RETRY = RetryPolicy(attempts=5, initial_delay=0.5, multiplier=2.0, max_delay=8.0,
                        retry_on=(ApiError,), retry_if=is_transient, what="Grid'5000 API call")


class ApiClient:
    """python-grid5000 pointed at one API, with vm5k's errors, retries and the server's clock.

    >>> client = ApiClient(ApiConfig("http://127.0.0.1:9/stable"))   # nothing is sent until a call
    >>> client.uri
    'http://127.0.0.1:9/stable'
    """

    def __init__(self, config: ApiConfig, *, retry: RetryPolicy = API_RETRY,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.config = config
        self.retry = retry
        self.timeout = config.timeout if config.timeout is not None else timeout
        self._local = threading.local()
        self._clock_lock = threading.Lock()
        self._server_time: float | None = None

    @property
    def uri(self) -> str:
        return self.config.uri

    def _client(self) -> Grid5000:
        client = getattr(self._local, "client", None)
        if client is None:
            client = Grid5000(**{**self.config.client_kwargs(), "timeout": self.timeout})
            self._local.client = client
        return client

    def close(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            client.session.close()
            self._local.client = None

    # -- the server's clock ---------------------------------------------------------------------------

    def _note_date(self, response: requests.Response) -> None:
        value = response.headers.get("Date")
        if not value:
            return
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return
        with self._clock_lock:
            self._server_time = parsed.timestamp()

    def note_server_time(self, epoch: float) -> None:
        """Record a time the server stated (e.g. a status document's ``uid``)."""
        with self._clock_lock:
            self._server_time = float(epoch)

    def server_now(self) -> int:
        """The API server's clock as of its last reply (asks ``GET /`` when nothing was heard yet)."""
        if self._server_time is None:
            self.get("/")
        assert self._server_time is not None
        return int(self._server_time)

    # -- calls ------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                 data: Any = None, timeout: float | None = None) -> requests.Response:
        client = self._client()
        kwargs: dict[str, Any] = {"query_data": dict(params or {})}
        if data is not None:
            kwargs["post_data"] = data
        if method == "delete":
            kwargs["content_type"] = None
        if timeout is not None and timeout != client.timeout:
            client.timeout = timeout
        try:
            response: requests.Response = client.http_request(method, path, **kwargs)
        except Grid5000AuthenticationError as error:
            raise self._auth_error(error) from None
        except Grid5000Error as error:
            raise ApiError(_message(error), error.response_code, method=method.upper(), path=path) from None
        except requests.exceptions.RetryError as error:
            raise ApiError(f"the server kept failing ({_reason(error)})", None, method=method.upper(),
                           path=path) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
            raise ApiError(f"no reply ({_reason(error)})", None, method=method.upper(), path=path) from None
        except requests.exceptions.RequestException as error:
            raise ApiError(f"request failed ({_reason(error)})", None, method=method.upper(),
                           path=path) from None
        finally:
            if client.timeout != self.timeout:
                client.timeout = self.timeout
        self._note_date(response)
        return response

    def _auth_error(self, error: Grid5000Error) -> CredentialsError:
        if self.config.authenticated:
            return CredentialsError(f"the Grid'5000 API at {self.uri} refused the credentials of "
                                    f"{self.config.username or 'the client certificate'} (401): check "
                                    f"{self.config.source}")
        return CredentialsError(f"the Grid'5000 API at {self.uri} wants credentials (401): write them in "
                                "~/.python-grid5000.yaml (username, password)")

    def get(self, path: str, **params: Any) -> Any:
        """GET `path` (relative to the API URL); the decoded JSON, retried on transient failures."""
        def once() -> Any:
            response = self._request("get", path, params=params)
            try:
                return response.json()
            except ValueError:
                raise ApiError("the reply is not JSON", response.status_code, method="GET",
                               path=path) from None
        return self.retry.call_sync(once, what=f"GET {path}")

    def post(self, path: str, data: Any, *, timeout: float | None = None) -> Any:
        """POST `data` as JSON, once (never retried: see the module docstring); the decoded reply."""
        response = self._request("post", path, data=data, timeout=timeout)
        if "json" in response.headers.get("Content-Type", ""):
            try:
                return response.json()
            except ValueError:
                pass
        return None

    def delete(self, path: str) -> None:
        """DELETE `path`, retried on transient failures."""
        self.retry.call_sync(lambda: self._request("delete", path), what=f"DELETE {path}")


def _message(error: Grid5000Error) -> str:
    text = error.error_message
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return one_line(str(text or "")) or "error"


def _reason(error: BaseException) -> str:
    text = one_line(str(error))
    return text[:300] + ("..." if len(text) > 300 else "")
