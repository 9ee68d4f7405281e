"""Which Grid'5000 API to talk to, and with which credentials.

Sources, first match wins for the URL:

1. ``--api URL`` (python-grid5000's ``uri`` form: ``https://api.grid5000.fr/stable``);
2. the environment variable ``VM5K_API`` (same form);
3. ``uri`` in ``~/.python-grid5000.yaml`` (the file python-grid5000 and EnOSlib read);
4. ``https://api.grid5000.fr/stable`` when that file exists without ``uri``, or on a Grid'5000 frontend
   (the machine's FQDN ends in ``.grid5000.fr``), where the API needs no credentials.

Anything else is a UsageError: vm5k never falls back silently to the real Grid'5000 (a test machine, whose
HOME holds no such file, can never reach it by accident).

Credentials (``username``/``password``, or ``sslcert``/``sslkey``) come only from that file, and are sent
only to the host the file is for (its ``uri``, else api.grid5000.fr): ``--api http://127.0.0.1:8080/stable``
with a real Grid'5000 file gets no password. Without credentials, requests carry no auth, as on a frontend
and as the testbed expects. A file that is not YAML, not a mapping, or gives a username without a password
is a UsageError naming the file — never python-grid5000's silent anonymous fallback. A file that others
can read gets a warning. The password is kept out of ``repr``, logs, errors and the outdir: `ApiConfig.record`
is what a run may save.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from vm5k.errors import UsageError

log = logging.getLogger(__name__)

DEFAULT_API = "https://api.grid5000.fr/stable"
ENV_API = "VM5K_API"
CREDENTIALS_FILE = ".python-grid5000.yaml"
_KNOWN_KEYS = {"uri", "username", "password", "verify_ssl", "timeout", "sslcert", "sslkey", "ssluser"}


class CredentialsError(UsageError):
    """The credentials file is broken or the server refused its credentials."""


@dataclass(frozen=True)
class ApiConfig:
    """The API URL and what to authenticate with. The password never shows in ``repr``.

    >>> config = ApiConfig("https://api.grid5000.fr/stable", username="alice", password="s3cret")
    >>> "s3cret" in repr(config), config.record()
    (False, {'api': 'https://api.grid5000.fr/stable'})
    """

    uri: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    verify_ssl: bool | str | None = None
    timeout: float | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    source: str = "--api"  # where the URL came from, for messages

    @property
    def authenticated(self) -> bool:
        return bool(self.username) or bool(self.sslcert)

    def client_kwargs(self) -> dict[str, Any]:
        """Arguments for ``grid5000.Grid5000``."""
        kwargs: dict[str, Any] = {"uri": self.uri}
        if self.username:
            kwargs.update(username=self.username, password=self.password)
        if self.sslcert:
            kwargs.update(sslcert=self.sslcert, sslkey=self.sslkey, ssluser=self.username or "anonymous")
        if self.verify_ssl is not None:
            kwargs["verify_ssl"] = self.verify_ssl
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        return kwargs

    def record(self) -> dict[str, str]:
        """What a run may write down (no user, no password)."""
        return {"api": self.uri}


def on_grid5000_frontend() -> bool:
    """True on a machine of Grid'5000 (frontends and nodes), where the API needs no credentials."""
    try:
        return socket.getfqdn().endswith(".grid5000.fr")
    except OSError:
        return False


def credentials_path(home: str | os.PathLike[str] | None = None) -> Path:
    return Path(home if home is not None else Path.home()) / CREDENTIALS_FILE


def check_api_url(url: str) -> str:
    """An http(s) URL with a host and no user:password part, without its trailing slash."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise UsageError(f"--api: invalid URL {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--api: invalid URL {url!r} (e.g. https://api.grid5000.fr/stable)")
    if parts.username is not None or parts.password is not None:
        raise UsageError("--api: do not put credentials in the URL; use ~/.python-grid5000.yaml")
    return url.rstrip("/")


def read_credentials_file(path: Path) -> dict[str, Any] | None:
    """The file's settings, None when it does not exist; CredentialsError when it is broken."""
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise CredentialsError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
    if info.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        who = "everyone" if info.st_mode & stat.S_IROTH else "its group"
        log.warning("%s is readable by %s and holds your Grid'5000 password: chmod 600 %s", path, who, path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise CredentialsError(f"{path} is not valid YAML{where}: fix or remove it") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise CredentialsError(f"{path} must be a YAML mapping (username: ..., password: ...)")
    unknown = sorted(str(key) for key in data if key not in _KNOWN_KEYS)
    if unknown:
        log.warning("%s: ignoring unknown key(s) %s", path, ", ".join(unknown))
    settings = {key: data[key] for key in _KNOWN_KEYS if data.get(key) is not None}
    for key in ("uri", "username", "password", "sslcert", "sslkey", "ssluser"):
        if key in settings and not isinstance(settings[key], str | int):
            raise CredentialsError(f"{path}: {key} must be a string")
        if key in settings:
            settings[key] = str(settings[key])
    if settings.get("username") and "password" not in settings and "sslcert" not in settings:
        raise CredentialsError(f"{path}: username {settings['username']} has no password")
    if "password" in settings and not settings.get("username"):
        raise CredentialsError(f"{path}: a password is given without a username")
    if "verify_ssl" in settings and not isinstance(settings["verify_ssl"], bool | str):
        raise CredentialsError(f"{path}: verify_ssl must be true, false or a CA bundle path")
    if "timeout" in settings:
        try:
            settings["timeout"] = float(settings["timeout"])
        except (TypeError, ValueError):
            raise CredentialsError(f"{path}: timeout must be a number of seconds") from None
    return settings


def load_api_config(api: str | None = None, *, environ: Mapping[str, str] | None = None,
                    home: str | os.PathLike[str] | None = None,
                    frontend: bool | None = None) -> ApiConfig:
    """The API to use and its credentials (see the module docstring for the rules).

    >>> load_api_config("http://127.0.0.1:8000/stable", environ={}, home="/nonexistent").uri
    'http://127.0.0.1:8000/stable'
    """
    environ = os.environ if environ is None else environ
    path = credentials_path(home)
    settings = read_credentials_file(path)
    file_uri = settings.get("uri") if settings else None
    if api is not None:
        uri, source = check_api_url(api), "--api"
    elif environ.get(ENV_API):
        uri, source = check_api_url(environ[ENV_API]), ENV_API
    elif file_uri:
        uri, source = check_api_url(file_uri), str(path)
    elif settings is not None or (on_grid5000_frontend() if frontend is None else frontend):
        uri, source = DEFAULT_API, str(path) if settings is not None else "Grid'5000 frontend"
    else:
        raise UsageError(f"no Grid'5000 API configured: give --api URL, set {ENV_API}, or write {path} "
                         "(username, password; see python-grid5000)")
    if not settings:
        return ApiConfig(uri, source=source)
    meant_for = urlsplit(check_api_url(file_uri or DEFAULT_API)).hostname
    if urlsplit(uri).hostname != meant_for:
        if settings.get("username") or settings.get("sslcert"):
            log.info("not sending the credentials of %s to %s (they are for %s)", path,
                     urlsplit(uri).hostname, meant_for)
        return ApiConfig(uri, source=source)
    if urlsplit(uri).scheme != "https" and settings.get("password") and not _local(uri):
        raise CredentialsError(f"refusing to send the password of {path} over plain http to {uri}")
    return ApiConfig(uri, username=settings.get("username"), password=settings.get("password"),
                     verify_ssl=settings.get("verify_ssl"), timeout=settings.get("timeout"),
                     sslcert=settings.get("sslcert"), sslkey=settings.get("sslkey"), source=source)


def _local(uri: str) -> bool:
    host = urlsplit(uri).hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"
