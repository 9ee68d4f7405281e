"""The command's options as the Python API's keywords: one list, one set of checks, for both.

``vm5k --n_vm 20 -r rennes:2`` and ``vm5k.deploy(n_vm=20, resources="rennes:2")`` must mean the same run and
fail the same way, so both go through `request_from_options`: the command passes argparse's values (strings
and flags), the API its keywords, which may also be the natural Python values (``resources=["rennes:2",
"nancy"]``, ``walltime=3600``, ``hosts=["h1", "h2"]``, ``vm_network={"cidr": "10.0.0.0/24"}``) and are turned
into the command's text first. Then the files the options name are read (``-i``, ``--hosts``, ``-a``,
``--ssh-config``, ``-p``), and `vm5k.request.build_request` checks everything.

>>> text_of("resources", ["rennes:2", "nancy"]), text_of("walltime", 3600), text_of("kavlan", True)
('rennes:2,nancy', '3600', True)
>>> text_of("n_vm", [3])
Traceback (most recent call last):
...
vm5k.errors.UsageError: n_vm: expected text or a number, not list
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vm5k import outdir
from vm5k.errors import UsageError
from vm5k.program import check_program
from vm5k.request import DEPLOY_OPTIONS, FLAG_OPTIONS, LIST_OPTIONS, Request, build_request

#: Keywords of `vm5k.deploy` and `vm5k.plan` besides `DEPLOY_OPTIONS`: where the run goes and is kept.
PLACE_OPTIONS = ("outdir", "api", "ssh_config")

#: Input files vm5k reads (topology, host list) are small; a bigger one is a mistake (or /dev/zero), not
#: something to load into memory.
MAX_INPUT_BYTES = 64 << 20


def text_of(name: str, value: Any) -> Any:
    """A keyword's value as the command line would give it (see the module docstring); None stays None."""
    if value is None:
        return None
    if name in FLAG_OPTIONS:
        if not isinstance(value, bool):
            raise UsageError(f"{name}: expected True or False, not {type(value).__name__}")
        return value
    if isinstance(value, bool):
        raise UsageError(f"{name}: expected text or a number, not bool")
    if isinstance(value, Path):
        return str(value)
    if name == "vm_network" and isinstance(value, Mapping):
        extra = [f"{key}={item}" for key, item in value.items() if key != "cidr"]
        parts = [str(value.get("cidr", "")), *extra]
        return ",".join(parts)
    if name in LIST_OPTIONS and isinstance(value, (list, tuple)):
        items = [text_of(name, item) for item in value]
        return ",".join(str(item) for item in items)
    if isinstance(value, (str, int, float)):
        return str(value)
    raise UsageError(f"{name}: expected text or a number, not {type(value).__name__}")


def read_input(path: str, what: str) -> bytes:
    """The content of an input file an option names, or a one-line `UsageError`."""
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_INPUT_BYTES + 1)
    except OSError as error:
        raise UsageError(f"{what}: cannot read {path}: {error.strerror or error}") from None
    except ValueError as error:  # e.g. a NUL byte in the path
        raise UsageError(f"{what}: cannot read {path!r}: {error}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise UsageError(f"{what}: {path} is larger than {MAX_INPUT_BYTES >> 20} MiB: not a vm5k input file")
    return data


def _hosts_text(value: str) -> str:
    """``--hosts``: a file when it names one, else the list itself."""
    if os.path.isfile(value):
        try:
            return read_input(value, "--hosts").decode()
        except UnicodeDecodeError:
            raise UsageError(f"--hosts: {value} is not a text file") from None
    if "/" in value:
        raise UsageError(f"--hosts: no such file: {value}")
    return value


def _must_exist(path: str | None, what: str) -> None:
    if path is not None and not os.path.isfile(path):
        raise UsageError(f"{what}: no such file: {path}")


def request_from_options(options: Mapping[str, Any], *, default_outdir: str) -> tuple[Request, list[str]]:
    """Options (argparse's dests, or the API's keywords as `text_of` gives them; None = not given) →
    (Request, warnings). Reads the files the options name; raises `UsageError` on bad input."""
    options = dict(options)
    if options.get("outdir") is None:
        options["outdir"] = default_outdir
    if options.get("resume") is None and options.get("destroy") is None:
        outdir.check_outdir_path(options["outdir"])  # before any warning: bad input is one line
    infile_data = read_input(options["infile"], "-i") if options.get("infile") is not None else None
    hosts_text = _hosts_text(options["hosts"]) if options.get("hosts") is not None else None
    env_file = options.get("env_file")
    if env_file is None or not env_file.startswith(("http://", "https://")):  # Kadeploy also takes URLs
        _must_exist(env_file, "-a")
    _must_exist(options.get("ssh_config"), "--ssh-config")
    request, warnings = build_request(options, infile_data=infile_data, hosts_text=hosts_text)
    if request.program is not None:
        check_program(request.program, os.getcwd())
    policy = request.placement
    if request.action == "deploy" and policy.distribution == "random" and policy.seed is None:
        seed = random.SystemRandom().randrange(2**31)
        request = dataclasses.replace(request, placement=dataclasses.replace(policy, seed=seed))
        warnings.append(f"random distribution: seed {seed} "
                        f"(give --seed {seed} to place the VMs the same way)")
    return request, warnings


def keywords_to_options(keywords: Mapping[str, Any]) -> dict[str, Any]:
    """The API's keywords as the command's option values (`text_of` each), unknown names refused."""
    known = set(DEPLOY_OPTIONS) | set(PLACE_OPTIONS)
    unknown = sorted(set(keywords) - known)
    if unknown:
        raise UsageError(f"unknown keyword {unknown[0]!r}: vm5k's keywords are the command's long options "
                         f"({', '.join(sorted(known))})")
    return {name: text_of(name, value) for name, value in keywords.items()}
