"""Kadeploy: the environment catalogue and the deployment record.

The catalogue is the vendored `environments.json` (a 2021 snapshot) plus today's `debian12-*` family, which
vm5k deploys by default (`debian12-min`). A deployment is `processing` until every node has been handled by
the node backend and the configured duration has elapsed on the testbed clock, then `terminated` with a
per-node `OK`/`KO`; DELETE while processing makes it `canceled`.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

DEBIAN12_VERSION = 2025010712
DEBIAN12_VARIANTS = {"min": "min", "base": "base", "nfs": "nfs", "big": "big"}
FINAL_STATUSES = frozenset({"terminated", "error", "canceled"})


def environment_catalogue(snapshot: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every public environment (snapshot + debian12 family), each with a `uid`, sorted by name."""
    envs = [dict(env) for env in snapshot]
    for variant in DEBIAN12_VARIANTS:
        for arch, short in (("x86_64", "x64"), ("aarch64", "arm64")):
            envs.append(
                {
                    "alias": f"debian12-{short}-{variant}",
                    "arch": arch,
                    "description": f"debian 12 (bookworm) for {short} - {variant}",
                    "destructive": False,
                    "image_kind": "tar",
                    "name": f"debian12-{variant}",
                    "os": "linux",
                    "version": DEBIAN12_VERSION,
                    "visibility": "public",
                }
            )
    out = []
    for env in envs:
        env = {"uid": f"{env['name']}_{env['arch']}_{env['version']}", **env, "user": "deploy"}
        out.append(env)
    out.sort(key=lambda e: (e["name"], e["arch"], e["version"]))
    return out


def resolve_environment(
    catalogue: list[dict[str, Any]], spec: str, arch: str | None
) -> dict[str, Any] | None:
    """Find `name`, `alias` or `uid` (the latest version, of `arch` when given, x86_64 first)."""
    matches = [e for e in catalogue if spec in (e["name"], e.get("alias"), e["uid"])]
    if arch:
        matches = [e for e in matches if e["arch"] == arch]
    if not matches:
        return None
    matches.sort(key=lambda e: (e["arch"] != "x86_64", -int(e["version"])))
    return matches[0]


def key_file_name(user: str, content: str) -> str:
    """g5k-api stores a submitted key as `<user>-key-<sha1(content)>` and shows its URL instead."""
    return f"{user}-key-{hashlib.sha1(content.encode()).hexdigest()}"


def new_deployment_uid() -> str:
    return f"D-{uuid.uuid4()}"


@dataclass
class Deployment:
    uid: str
    site_uid: str
    user_uid: str
    environment: str
    nodes: list[str]
    created_at: int
    updated_at: int
    finish_after: int  # the testbed time at which it may end (created_at + configured duration)
    version: str | None = None
    arch: str | None = None
    status: str = "processing"
    key: str | None = None  # the URL of the stored key (g5k-api never shows the key itself)
    vlan: int | str | None = None  # a KaVLAN id (a number), or a name the API was given
    result: dict[str, dict[str, Any]] | None = None
    output: str | None = None
    disable_disk_partitioning: bool = False
    disable_bootloader_install: bool = False
    ignore_nodes_deploying: bool = False
    node_results: dict[str, bool] = field(default_factory=dict)  # backend answers received so far
    ko_nodes: list[str] = field(default_factory=list)  # injected KO (not sent to the backend)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Deployment:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def render(self, prefix: str) -> dict[str, Any]:
        """The API object: DB columns in order, nulls omitted, the key shown as a URL."""
        out: dict[str, Any] = {
            "uid": self.uid,
            "site_uid": self.site_uid,
            "user_uid": self.user_uid,
            "environment": self.environment,
        }
        for name in ("version", "arch"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        out["status"] = self.status
        if self.key is not None:
            out["key"] = self.key
        out["nodes"] = list(self.nodes)
        if self.vlan is not None:
            out["vlan"] = self.vlan
        if self.result is not None:
            out["result"] = self.result
        if self.output is not None:
            out["output"] = self.output
        out["disable_disk_partitioning"] = self.disable_disk_partitioning
        out["disable_bootloader_install"] = self.disable_bootloader_install
        out["ignore_nodes_deploying"] = self.ignore_nodes_deploying
        out["created_at"] = self.created_at
        out["updated_at"] = self.updated_at
        out["links"] = [
            {
                "rel": "self",
                "href": f"{prefix}/sites/{self.site_uid}/deployments/{self.uid}",
                "type": "application/vnd.grid5000.item+json",
            },
            {
                "rel": "parent",
                "href": f"{prefix}/sites/{self.site_uid}",
                "type": "application/vnd.grid5000.item+json",
            },
        ]
        return out
