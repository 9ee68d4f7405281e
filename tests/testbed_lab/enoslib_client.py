"""EnOSlib's G5k provider, unmodified, as a user drives it: run by test_enoslib.py in EnOSlib's own venv.

    python enoslib_client.py deploy|standard SITE CLUSTER

HOME is a temporary folder holding `.python-grid5000.yaml` (the testbed's API) and `.ssh/id_rsa[.pub]`;
ANSIBLE_SSH_ARGS names the testbed's routing-only SSH config and that key. Prints one JSON line: what each
step saw (commands' output per host, the networks EnOSlib returns, the job it took up again).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import enoslib as en


def describe(networks: dict) -> dict:
    out = {}
    for role, nets in networks.items():
        items = []
        for net in nets:
            item = {"network": str(net.network), "gateway": str(net.gateway) if net.gateway else None,
                    "dns": str(net.dns) if net.dns else None, "free": None}
            if net.has_free_ips:
                ips = []
                for ip in net.free_ips:
                    ips.append(str(ip))
                    if len(ips) == 3:
                        break
                item["free"] = ips
            items.append(item)
        out[role] = items
    return out


def outputs(roles: en.Roles, command: str) -> dict[str, str]:
    return {r.host: r.payload["stdout"] for r in en.run_command(command, roles=roles)}


def main(mode: str, site: str, cluster: str) -> None:
    en.set_config(g5k_auto_jump=False)  # never the real access gateway
    key = Path.home() / ".ssh" / "id_rsa.pub"
    seen: dict = {}
    if mode == "deploy":
        prod = en.G5kNetworkConf(type="prod", roles=["prod"], site=site)
        conf = (en.G5kConf.from_settings(job_type=["deploy"], env_name="debian12-min", key=str(key),
                                         job_name="enoslib-contract", walltime="0:30:00")
                .add_network_conf(prod)
                .add_network(id="sub", type="slash_22", roles=["subnet"], site=site)
                .add_machine(roles=["a"], cluster=cluster, nodes=1, primary_network=prod)
                .add_machine(roles=["b"], cluster=cluster, nodes=1, primary_network=prod)
                .finalize())
    else:
        conf = (en.G5kConf.from_settings(job_type=[], job_name="enoslib-contract-std", walltime="0:30:00")
                .add_machine(roles=["a"], cluster=cluster, nodes=1)
                .finalize())
    provider = en.G5k(conf)
    roles, networks = provider.init()
    seen["roles"] = {role: sorted(h.address for h in hosts) for role, hosts in roles.items()}
    seen["first"] = outputs(roles, "id -un; cat /etc/grid5000/release")
    seen["networks"] = describe(networks)
    seen["jobs"] = [job.uid for job in provider.jobs]
    # the same configuration again: EnOSlib takes the running job up again
    again = en.G5k(conf)
    roles, _ = again.init()
    seen["again_jobs"] = [job.uid for job in again.jobs]
    seen["again"] = outputs(roles, "id -un; cat /etc/grid5000/release")
    again.destroy()
    print(json.dumps(seen))


if __name__ == "__main__":
    main(*sys.argv[1:4])
