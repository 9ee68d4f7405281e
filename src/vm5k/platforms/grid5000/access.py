"""SSH access to Grid'5000 nodes from outside: through the access gateway, as ProxyJump.

On a frontend, nodes are reached directly. From anywhere else, every connection goes through
``access.grid5000.fr`` with the user's Grid'5000 login, while nodes are logged into as root (deployed
hosts accept the run's key for root). `gateway_ssh_config` writes that as an OpenSSH config file, which
the workflow saves in the outdir and passes to vm5k.remote (``SshSettings.config_files``), so the SSH
layer, the outdir's ``ssh_config`` and plain ``ssh -F`` all agree. The testbed needs none of it: it
writes its own ssh_config (``<state>/ssh_config``), given with ``--ssh-config``.

>>> print(gateway_ssh_config("alice"))
# Grid'5000 from outside: through the access gateway
Host access.grid5000.fr
    User alice
<BLANKLINE>
Host *.grid5000.fr !access.grid5000.fr
    User root
    ProxyJump access.grid5000.fr
<BLANKLINE>
"""

from __future__ import annotations

import re

from vm5k.errors import UsageError
from vm5k.platforms.grid5000.credentials import on_grid5000_frontend

ACCESS_GATEWAY = "access.grid5000.fr"
_LOGIN = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def needs_gateway() -> bool:
    """True when vm5k does not run on a Grid'5000 machine (nodes are then behind the gateway)."""
    return not on_grid5000_frontend()


def gateway_ssh_config(login: str, gateway: str = ACCESS_GATEWAY) -> str:
    """An OpenSSH config reaching ``*.grid5000.fr`` as root through `gateway` (as `login`)."""
    if not _LOGIN.fullmatch(login or ""):
        raise UsageError(f"invalid Grid'5000 login {login!r}")
    return (f"# Grid'5000 from outside: through the access gateway\n"
            f"Host {gateway}\n    User {login}\n\n"
            f"Host *.grid5000.fr !{gateway}\n    User root\n    ProxyJump {gateway}\n")
