"""`LabBackend`: the API server's `NodeBackend` when a testbed was brought up with `vm5k-testbed up`.

The API server calls it (see g5k_testbed.backend): OAR shows only the materialised nodes `Alive`,
Kadeploy really resets them, KaVLAN really re-plugs them, and the production DHCP serves exactly the
subnets held by running jobs. `deploy_node` runs in the server's worker threads (one lock per node);
the other calls are quick, as the server holds its state lock while making them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from g5k_testbed.lab.lab import Lab
from g5k_testbed.lab.layout import Layout

log = logging.getLogger(__name__)


class LabBackend:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self._nodes = {node.fqdn for node in lab.plan().nodes}

    @classmethod
    def load(cls, state_dir: str | Path) -> LabBackend:
        return cls(Lab(Layout(state_dir)))

    def materialised_nodes(self) -> set[str] | None:
        """The FQDNs of the nodes `up` built; every other node of the served sites is `Absent`."""
        return set(self._nodes)

    def deploy_node(self, fqdn: str, environment: str, authorized_keys: str | None,
                    release: str | None = None) -> bool:
        """Kadeploy: stop the node's processes and VMs, wipe what users wrote, fresh daemons, root's key."""
        if fqdn not in self._nodes:
            return False
        ok = self.lab.deploy_node(fqdn, environment, authorized_keys, release)
        if not ok:
            log.error("deployment of %s failed: %s", fqdn,
                      self.lab.runtime.read()["nodes"].get(fqdn, {}).get("error"))
        return ok

    def needs_reboot(self, fqdn: str, deploy: bool) -> bool:
        """Every materialised node has an epilogue: a reboot, or at least its job's processes killed."""
        return fqdn in self._nodes

    def reboot_node(self, fqdn: str, deploy: bool) -> bool:
        """A deploy job's node, or one where the job's user became root (`sudo-g5k`), goes back to the
        standard environment (about a second); on another, the job's processes are killed."""
        if fqdn not in self._nodes:
            return True
        if deploy or self.lab.node_tainted(fqdn):
            return self.lab.reboot_to_standard(fqdn)
        self.lab.close_user_access(fqdn)
        return True

    def job_started(self, fqdn: str, user: str, deploy: bool) -> None:
        """Outside deploy jobs, the job's user may log in on the node (as pam_oar allows on Grid'5000)."""
        if fqdn in self._nodes and not deploy:
            self.lab.open_user_access(fqdn, user)

    def move_to_vlan(self, fqdn: str, vlan: str) -> None:
        """KaVLAN: re-plug the node (its primary interface) onto `vlan`'s bridge with its address there."""
        self.lab.move_to_vlan(fqdn, vlan)

    def subnets_changed(self, site: str, cidrs: list[str]) -> None:
        """The production DHCP of `site` now serves exactly the IP/MAC pairs of `cidrs`."""
        self.lab.subnets_changed(site, cidrs)

    def close(self) -> None:
        """Nothing to release: the nodes outlive the server (`vm5k-testbed down` removes them)."""
