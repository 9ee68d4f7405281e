"""The HTTP side: versions, content negotiation, errors as text/plain, the `Date` header, fault injection.

A stdlib `ThreadingHTTPServer` speaking HTTP/1.1 with keep-alive (python-grid5000 reuses its connection).
Handlers run under the testbed lock after `tick()`; the JSON reply is encoded after the lock is released,
and injected latency is slept without holding it.

>>> handle = start_server(TestbedConfig(sites=["nancy"], tick_interval=0))
>>> handle.url.endswith("/stable")
True
>>> handle.stop()
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from g5k_testbed.auth import AuthenticationFailed
from g5k_testbed.backend import NodeBackend
from g5k_testbed.faults import ERROR_TEXTS
from g5k_testbed.http_types import Reply, Request
from g5k_testbed.reference import REFERENCE_VERSION, Reference
from g5k_testbed.routes import ADMIN_PREFIX, ADMIN_ROUTES, API_ROUTES, VERSION_PREFIXES, Router
from g5k_testbed.testbed import ApiError, Testbed, TestbedConfig
from g5k_testbed.timefmt import http_date
from g5k_testbed.views import COLLECTION, ITEM

log = logging.getLogger(__name__)
MAX_BODY = 16 * 1024 * 1024
DEFAULT_TEXTS = {
    400: "Bad Request",
    401: "Authorization Required",
    403: "You are not authorized to access this resource",
    404: "Not Found",
    405: "Method Not Allowed",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    **ERROR_TEXTS,
}
REFERENCE_CACHE = "public, max-age=60, must-revalidate, proxy-revalidate, s-maxage=60"


def negotiate(accept: str, body: Any) -> str:
    """g5k-api's rule: the vnd types for `*/*` or a vnd Accept, `application/json` for JSON clients."""
    accept = accept.lower()
    if "application/json" in accept and "vnd.grid5000" not in accept:
        return "application/json; charset=utf-8"
    return (COLLECTION if isinstance(body, dict) and "items" in body else ITEM) + "; charset=utf-8"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], testbed: Testbed, admin: bool) -> None:
        super().__init__(address, _Handler)
        self.testbed = testbed
        self.api = Router(API_ROUTES)
        self.admin = Router(ADMIN_ROUTES) if admin else None
        host, port = self.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        self.base_url = f"http://{host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body leave in separate writes: no 40 ms delayed-ACK stall
    server: _Server

    # ------------------------------------------------------------------ plumbing
    def date_time_string(self, timestamp: float | None = None) -> str:
        return http_date(self.server.testbed.clock.now())  # the testbed's time, not the machine's

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _send(self, status: int, payload: bytes, content_type: str | None, headers: dict[str, str]) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Vary", "accept")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _error(self, status: int, text: str | None = None, headers: dict[str, str] | None = None) -> None:
        body = (text or DEFAULT_TEXTS.get(status, "Error")).encode()
        self._send(status, body, "text/plain; charset=utf-8", headers or {})

    # ------------------------------------------------------------------ one request
    def _serve(self, method: str) -> None:
        try:
            self._dispatch(method)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug must answer 500 like Rails, not kill the connection silently
            log.exception("unhandled error on %s %s", method, self.path)
            try:
                self._error(500, str(exc) or None)
            except OSError:
                self.close_connection = True

    def _dispatch(self, method: str) -> None:
        tb = self.server.testbed
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._error(413, "Request Entity Too Large")
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}

        admin = path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")
        if admin:
            if self.server.admin is None:
                self._error(404)
                return
            router, prefix, rest = self.server.admin, "", path[len(ADMIN_PREFIX) :] or "/"
        else:
            segment = "/" + path.lstrip("/").split("/", 1)[0]
            if segment not in VERSION_PREFIXES:
                self._error(404, f"Cannot find resource {path}")
                return
            router, prefix, rest = self.server.api, segment, path[len(segment) :] or "/"
        if len(rest) > 1:
            rest = rest.rstrip("/")

        try:
            login = tb.config.auth.identify(headers.get("authorization"), headers.get("x-api-user-cn"))
        except AuthenticationFailed:
            self._error(401, None, {"WWW-Authenticate": 'Basic realm="Grid\'5000 testbed"'})
            return

        decision = None if admin else tb.faults.decide(method)
        if decision is not None and decision.delay:
            time.sleep(decision.delay)
        if decision is not None and decision.fail_before:
            self._error(decision.fail_before)
            return

        handler, params, allowed = router.match(method, rest)
        if handler is None:
            if allowed:
                self._error(405, None, {"Allow": ",".join(dict.fromkeys(allowed))})
            else:
                self._error(404, f"Cannot find resource {rest}")
            return
        base_url = f"http://{headers['host']}" if headers.get("host") else self.server.base_url
        request = Request(method, rest, prefix, query, headers, body, base_url, params, login)
        try:
            with tb.lock:
                tb.tick()
                reply = handler(tb, request)
        except ApiError as exc:
            self._error(exc.status, exc.text, exc.headers)
            return
        if decision is not None and decision.fail_after:
            self._error(decision.fail_after)  # executed, but the client never learns it
            return
        self._reply(reply, headers, query)

    def _reply(self, reply: Reply, headers: dict[str, str], query: dict[str, str]) -> None:
        out_headers = dict(reply.headers)
        if reply.body is None:
            self._send(reply.status, b"", None, out_headers)
            return
        if isinstance(reply.body, str):
            self._send(
                reply.status,
                reply.body.encode(),
                (reply.content_type or "text/plain") + "; charset=utf-8",
                out_headers,
            )
            return
        pretty = (
            query.get("pretty", "").lower() in ("yes", "true", "1")
            or headers.get("x-rack-prettyjson", "").lower() == "yes"
        )
        payload = json.dumps(
            reply.body, indent=2 if pretty else None, separators=None if pretty else (",", ":")
        ).encode()
        if reply.cache:
            out_headers.setdefault("ETag", f'"{REFERENCE_VERSION}"')
            out_headers.setdefault("Cache-Control", REFERENCE_CACHE)
        self._send(reply.status, payload, negotiate(headers.get("accept", "*/*"), reply.body), out_headers)


@dataclass
class ServerHandle:
    """A running testbed API server (in process): `.url` ends in `/stable`; `.stop()` ends it."""

    url: str
    base_url: str
    testbed: Testbed
    _server: _Server
    _thread: threading.Thread

    def advance(self, seconds: float) -> None:
        """Move the testbed clock forward and replay what became due (tests)."""
        with self.testbed.lock:
            self.testbed.clock.advance(seconds)
            self.testbed.tick()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self.testbed.close()


def start_server(
    config: TestbedConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    backend: NodeBackend | None = None,
    reference: Reference | None = None,
) -> ServerHandle:
    """Start the API in a background thread; port 0 picks a free port.

    `reference` replaces the vendored data of `config.sites` (e.g. one extended with synthetic nodes).

    Admin endpoints (`/_testbed/...`) are on when `config.admin` is true.
    """
    config = config or TestbedConfig()
    testbed = Testbed(config, backend=backend, reference=reference)
    try:
        server = _Server((host, port), testbed, admin=config.admin)
    except BaseException:
        testbed.close()
        raise
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="testbed-http", daemon=True
    )
    thread.start()
    return ServerHandle(f"{server.base_url}/stable", server.base_url, testbed, server, thread)
