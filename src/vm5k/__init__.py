"""vm5k: deploy hundreds of virtual machines on Grid'5000 (or its testbed), from the shell or from Python.

>>> import vm5k
>>> run = vm5k.deploy(n_vm=4, resources="rennes:2", walltime="0:30:00", outdir="xp1")  # doctest: +SKIP
>>> results = run.run("uname -r", on=run.vms, timeout=60)                               # doctest: +SKIP
>>> run.destroy()                                                                       # doctest: +SKIP

The API (`deploy`, `plan`, `max_vms`, `Run`, and the errors) is described in docs/api.md. ``import vm5k``
stays light: the modules behind these names (SSH, HTTP clients) load on first use.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

from vm5k.errors import DeploymentError, Interrupted, PlatformError, RemoteError, UsageError, Vm5kError

__version__ = "1.0.0.dev0"

# cryptography 51 deprecates DSA, and asyncssh (which still supports DSA keys) touches those names when it
# is imported: every vm5k command would begin with ten lines of a library's deprecation notice that the
# user can do nothing about. vm5k never makes or accepts DSA keys (its keys are ed25519). Only that notice
# from asyncssh is silenced; any other warning still shows.
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh(\.|$)")

if TYPE_CHECKING:
    from vm5k.api import HostResult, MaxVmsResult, Plan, Results, Run, deploy, deploy_async, max_vms, plan
    from vm5k.ownership import RunBusy, StopRequested
    from vm5k.topology import VM, Host

#: public name → the module that defines it (imported when the name is first used)
_LAZY = {name: "vm5k.api" for name in ("HostResult", "MaxVmsResult", "Plan", "Results", "Run", "deploy",
                                         "deploy_async", "max_vms", "plan")}
_LAZY.update({"RunBusy": "vm5k.ownership", "StopRequested": "vm5k.ownership", "VM": "vm5k.topology",
              "Host": "vm5k.topology"})

__all__ = ["VM", "DeploymentError", "Host", "HostResult", "Interrupted", "MaxVmsResult", "Plan",
           "PlatformError", "RemoteError", "Results", "Run", "RunBusy", "StopRequested", "UsageError",
           "Vm5kError", "__version__", "deploy", "deploy_async", "max_vms", "plan"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vm5k' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
