"""The hook between the API server and the machines behind its nodes.

The server keeps the whole Grid'5000 state (jobs, deployments, vlans, subnets); a `NodeBackend` makes that
state true on real machines. `vm5k-testbed serve` alone runs with `NullBackend` (pure state: every node of
the served sites exists and every deployment succeeds); the lab (`g5k_testbed.lab`, `vm5k-testbed up`)
provides a `LabBackend` that materialises a few nodes as network namespaces with sshd and libvirtd.

Threading contract: `deploy_node` blocks (seconds) and is only ever called from a worker thread; the other
calls are quick and are made with the server's state lock held, so they must not call back into the API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class NodeBackend(Protocol):
    def materialised_nodes(self) -> set[str] | None:
        """FQDNs of the nodes that really exist; None = every node of the served sites is Alive.

        Nodes not in the set are OAR state `Absent` (never scheduled).
        """
        ...

    def deploy_node(
        self, fqdn: str, environment: str, authorized_keys: str | None, release: str | None = None
    ) -> bool:
        """Reset the node as Kadeploy would and install the key; True = OK, False = KO. Blocking.

        `release` is the deployed environment's `/etc/grid5000/release` line (e.g.
        `debian12-x64-min-2025010712`). Called from a worker thread, never from a request handler. The
        deployment stays `processing` until every node's call returned and the configured Kadeploy
        duration elapsed on the testbed clock; injected KO nodes are KO without calling it.
        """
        ...

    def needs_reboot(self, fqdn: str, deploy: bool) -> bool:
        """Whether the end of a job (`deploy` or not) on this node means rebooting it (quick, under the lock).

        True makes the job `finishing` until `reboot_node` returned for each such node of it.
        """
        ...

    def reboot_node(self, fqdn: str, deploy: bool) -> bool:
        """The epilogue of a job on the node (blocking, from a worker thread): a deploy job's node, or one
        where its user became root, back in the standard environment (every process and VM gone, keys
        and writes gone); otherwise the job's processes killed and its user's access closed."""
        ...

    def job_started(self, fqdn: str, user: str, deploy: bool) -> None:
        """A job of `user` runs on the node: outside deploy jobs, that user may now log in (quick)."""
        ...

    def move_to_vlan(self, fqdn: str, vlan: str) -> None:
        """Plug the node into `vlan` ("DEFAULT" or a vlan id string).

        Called on POST /vlans/{id}/nodes, on deployments with `vlan`, and when a job holding the vlan ends.
        """
        ...

    def subnets_changed(self, site: str, cidrs: list[str]) -> None:
        """The /22s now held by running jobs of `site` (called whenever that set changes).

        The lab's production DHCP then serves exactly their IP/MAC pairs.
        """
        ...

    def close(self) -> None: ...


class NullBackend:
    """No machines: every node exists, every deployment succeeds at once, vlans and subnets are state only."""

    def materialised_nodes(self) -> set[str] | None:
        return None

    def deploy_node(
        self, fqdn: str, environment: str, authorized_keys: str | None, release: str | None = None
    ) -> bool:
        return True

    def needs_reboot(self, fqdn: str, deploy: bool) -> bool:
        return False

    def reboot_node(self, fqdn: str, deploy: bool) -> bool:
        return True

    def job_started(self, fqdn: str, user: str, deploy: bool) -> None:
        return None

    def move_to_vlan(self, fqdn: str, vlan: str) -> None:
        return None

    def subnets_changed(self, site: str, cidrs: list[str]) -> None:
        return None

    def close(self) -> None:
        return None


def load_backend(state_dir: str | Path | None) -> NodeBackend:
    """The lab's backend when `<state_dir>/lab.json` exists (from `vm5k-testbed up`), else NullBackend."""
    if state_dir is not None and (Path(state_dir) / "lab.json").exists():
        from g5k_testbed.lab.backend import LabBackend  # lazy: the lab needs root-only tools

        backend: NodeBackend = LabBackend.load(state_dir)
        return backend
    return NullBackend()
