"""Kadeploy through the API: install an environment on the hosts, with the run's key, into a vlan.

Environments (``-e``/``-a``):

- ``-e NAME`` (default ``debian12-min``) is sent as it is; ``-e user:NAME`` becomes ``NAME@user`` (an
  environment that user registered), the API's form.
- ``-a FILE``: the API takes an environment *name* or the http(s) *URL* of a Kadeploy description, never
  a file. So ``-a`` accepts an ``http(s)://`` URL as it is, or a file under ``~/public/`` of the frontend,
  which Grid'5000 publishes at ``https://public.<site>.grid5000.fr/~<login>/<path>`` (each site's
  deployment uses its own site's address). Any other path is a UsageError that says so.

One deployment per site (the API deploys a site's nodes); a KO node is deployed once more, alone with the
other KO nodes of its site, and what is still KO is reported, never silently dropped. A deployment whose
reply is lost is found again (same user, nodes and environment, created since) rather than sent twice.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vm5k.errors import PlatformError, UsageError
from vm5k.platforms.grid5000.api import ApiClient, ApiError
from vm5k.platforms.grid5000.polling import api_polling
from vm5k.topology import one_line

log = logging.getLogger(__name__)

DEFAULT_ENVIRONMENT = "debian12-min"
FINAL = frozenset({"terminated", "error", "canceled"})


@dataclass(frozen=True)
class Environment:
    """What Kadeploy installs: `name` for messages and markers, `spec(site)` for the API."""

    name: str
    url: str | None = None  # an http(s) description, or a template with {site}

    def spec(self, site: str) -> str:
        return self.url.replace("{site}", site) if self.url else self.name

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Environment:
        return cls(str(data["name"]), data.get("url"))


def environment(env_name: str | None = None, env_file: str | None = None, *, login: str | None = None,
                home: str | os.PathLike[str] | None = None) -> Environment:
    """The environment of ``-e``/``-a`` (see the module docstring).

    >>> environment("alice:my-env").spec("lyon")
    'my-env@alice'
    >>> environment(env_file="https://example.org/env.yaml").spec("lyon")
    'https://example.org/env.yaml'
    """
    if env_file is not None:
        if env_file.startswith(("http://", "https://")):
            return Environment(env_file, env_file)
        public = Path(home if home is not None else Path.home()) / "public"
        path = Path(os.path.abspath(os.path.expanduser(env_file)))
        try:
            relative = path.relative_to(public)
        except ValueError:
            raise UsageError(f"-a: the Kadeploy API reads environment descriptions from URLs: give an "
                             f"http(s) URL, or put {env_file} under {public}/ (published at "
                             "https://public.<site>.grid5000.fr/~<login>/)") from None
        user = login or os.environ.get("USER") or "root"
        return Environment(path.name, f"https://public.{{site}}.grid5000.fr/~{user}/{relative.as_posix()}")
    name = env_name or DEFAULT_ENVIRONMENT
    owner, sep, base = name.partition(":")
    if sep:
        return Environment(name, f"{base}@{owner}")
    return Environment(name)


@dataclass
class DeploymentRecord:
    """One Kadeploy run, as recorded in the topology (so a resumed run waits for it instead of redoing)."""

    site: str
    uid: str
    nodes: list[str]
    environment: str
    attempt: int = 1
    status: str = "processing"
    ko: dict[str, str] = field(default_factory=dict)  # node -> why

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "uid": self.uid, "nodes": list(self.nodes),
                "environment": self.environment, "attempt": self.attempt, "status": self.status,
                "ko": dict(self.ko)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeploymentRecord:
        return cls(str(data["site"]), str(data["uid"]), [str(n) for n in data.get("nodes") or ()],
                   str(data.get("environment", "")), int(data.get("attempt", 1)), str(data.get("status")),
                   {str(k): str(v) for k, v in (data.get("ko") or {}).items()})


def deployment_payload(nodes: Sequence[str], spec: str, key: str, vlan: str | None) -> dict[str, Any]:
    payload: dict[str, Any] = {"nodes": list(nodes), "environment": spec, "key": key}
    if vlan is not None:
        payload["vlan"] = int(vlan) if vlan.isdigit() else vlan
    return payload


def submit_deployment(api: ApiClient, site: str, nodes: Sequence[str], spec: str, key: str,
                      vlan: str | None, *, user: str | None = None, attempts: int = 4,
                      sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """POST a deployment once: a lost reply is looked for among the user's recent deployments first."""
    payload = deployment_payload(nodes, spec, key, vlan)
    since = api.server_now() - 5
    for attempt in range(1, attempts + 1):
        try:
            reply = api.post(f"/sites/{site}/deployments", payload)
            if isinstance(reply, Mapping) and reply.get("uid"):
                return dict(reply)
            raise ApiError("the deployment's reply carries no uid", None, method="POST",
                           path=f"/sites/{site}/deployments")
        except ApiError as error:
            if not error.transient:
                raise PlatformError(f"Kadeploy on {site} refused the deployment: {error.message}") from None
            found = _find_deployment(api, site, nodes, spec, since, user)
            if found is not None:
                return found
            if attempt == attempts:
                raise
            sleep(min(8.0, 0.5 * 2**attempt))
    raise AssertionError("unreachable")


def _find_deployment(api: ApiClient, site: str, nodes: Sequence[str], spec: str, since: int,
                     user: str | None) -> dict[str, Any] | None:
    params: dict[str, Any] = {"limit": 50}
    if user:
        params["user"] = user
    wanted = set(nodes)
    for item in api.get(f"/sites/{site}/deployments", **params).get("items", []):
        if (set(item.get("nodes") or ()) == wanted and item.get("environment") == spec
                and int(item.get("created_at") or 0) >= since):
            return dict(item)
    return None


def wait_deployments(api: ApiClient, records: Sequence[DeploymentRecord], *, poll: float = 10.0,
                     sleep: Callable[[float], None] = time.sleep,
                     progress: Callable[[Sequence[DeploymentRecord]], None] | None = None) -> None:
    """Poll until every deployment ended; fills each record's `status` and `ko` (node → reason)."""
    pending = [r for r in records if r.status not in FINAL]
    delays = api_polling(poll)
    while pending:
        for record in pending:
            doc = api.get(f"/sites/{record.site}/deployments/{record.uid}")
            record.status = str(doc.get("status") or "processing")
            if record.status in FINAL:
                record.ko = deployment_failures(doc, record.nodes)
        if progress is not None:
            progress(records)
        pending = [r for r in pending if r.status not in FINAL]
        if pending:
            sleep(next(delays))


def deployment_failures(doc: Mapping[str, Any], nodes: Sequence[str]) -> dict[str, str]:
    """Node → why, for the nodes a finished deployment did not deploy."""
    status = str(doc.get("status"))
    if status != "terminated":
        why = one_line(str(doc.get("output") or f"deployment {status}"))[:200]
        return {node: why for node in nodes}
    result = doc.get("result") or {}
    failures = {}
    for node in nodes:
        entry = result.get(node) or {}
        if str(entry.get("state", "")).upper() != "OK":
            step = "/".join(str(x) for x in (entry.get("macro"), entry.get("micro")) if x)
            failures[node] = f"Kadeploy KO{' at ' + step if step else ''}"
    return failures
