"""The run's SSH client config files, read and parsed once, then looked up per host.

Why not let asyncssh read them: asyncssh parses the whole file at every connection (its parser applies the
``Host`` blocks while it reads), and the testbed's config has about eleven blocks per node (each node's
KaVLAN names), so a run paid (connections × blocks): a quarter of vm5k's CPU at 8 hosts, growing with the
square of the fleet. Here the files are read once per run into blocks; a lookup walks the blocks in memory
(first value wins, as in OpenSSH) and yields the few options vm5k passes to asyncssh explicitly.

Only what vm5k understands is handled this way: ``Host`` blocks with the options below. A file with
anything else (``Match``, ``Include``, a cipher list, a token we do not expand) is marked *not exact*, and
the connection layer then lets asyncssh read it per host as before: slower, never different.

>>> config = ClientConfig.parse('''
... Host node-1 node-1.rennes
...   HostName node-1.rennes.grid5000.fr
...   ProxyCommand nc 10.0.0.1 %p
... Host *
...   User root
...   IdentityFile ~/.ssh/key
... ''', home="/home/me")
>>> config.exact
True
>>> options = config.options("node-1")
>>> options.hostname, options.port, options.user, options.proxy_command, options.identity_files
('node-1.rennes.grid5000.fr', 22, 'root', 'nc 10.0.0.1 22', ('/home/me/.ssh/key',))
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: Options used to reach a host (lower case, as OpenSSH compares them).
REACH = {"hostname", "port", "user", "identityfile", "identitiesonly", "proxycommand", "proxyjump"}
#: Options vm5k decides itself (its known_hosts store, its timeouts and keepalives) or that change nothing
#: for a program: accepted and ignored, as asyncssh's own reading of them was overridden by vm5k's settings.
OVERRIDDEN = {"userknownhostsfile", "globalknownhostsfile", "stricthostkeychecking", "checkhostip",
              "connecttimeout", "serveraliveinterval", "serveralivecountmax", "loglevel", "batchmode",
              "hashknownhosts", "updatehostkeys", "controlmaster", "controlpath", "controlpersist"}
#: Tokens expanded in ProxyCommand and IdentityFile (others make the file not exact).
TOKEN = re.compile(r"%(.)")
MULTIPLE = {"identityfile"}  # every matching value counts, in order


@dataclass(frozen=True)
class HostOptions:
    """What a config gives for one host name: where it leads and how to get there."""

    alias: str
    hostname: str
    port: int
    user: str | None
    identity_files: tuple[str, ...]
    identities_only: bool
    proxy_command: str | None
    proxy_jump: str | None


@dataclass(frozen=True)
class _Block:
    patterns: tuple[str, ...]  # () for the lines before the first Host: they apply to every host
    options: tuple[tuple[str, str], ...]

    def matches(self, host: str) -> bool:
        if not self.patterns:
            return True
        name = host.lower()
        matched = False
        for pattern in self.patterns:
            negated = pattern.startswith("!")
            if fnmatch.fnmatchcase(name, pattern.lstrip("!").lower()):
                if negated:
                    return False
                matched = True
        return matched


class ClientConfig:
    """OpenSSH client config files, parsed once (see the module docstring)."""

    def __init__(self, blocks: Iterable[_Block], unsupported: Iterable[str] = (), home: str | None = None,
                 local_user: str | None = None) -> None:
        self.blocks = tuple(blocks)
        self.unsupported = tuple(dict.fromkeys(unsupported))
        self.home = home if home is not None else os.path.expanduser("~")
        self.local_user = local_user or os.environ.get("USER") or "root"

    @property
    def exact(self) -> bool:
        """True when every line was understood: lookups give what asyncssh's own reading would."""
        return not self.unsupported

    @classmethod
    def read(cls, paths: Iterable[Path]) -> ClientConfig:
        """Read the files (once); a missing file counts as empty, as for ssh -F."""
        texts = []
        for path in paths:
            try:
                texts.append(Path(path).read_text())
            except FileNotFoundError:
                continue
        return cls.parse("\n".join(texts))

    @classmethod
    def parse(cls, text: str, home: str | None = None, local_user: str | None = None) -> ClientConfig:
        """Split the text into blocks; note what is not understood."""
        blocks: list[_Block] = []
        unsupported: list[str] = []
        patterns: tuple[str, ...] = ()
        options: list[tuple[str, str]] = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            key, value = _split(line)
            key = key.lower()
            if key == "host":
                blocks.append(_Block(patterns, tuple(options)))
                patterns, options = tuple(_words(value)), []
            elif key in REACH:
                if key in ("proxycommand", "identityfile") and _bad_tokens(value):
                    unsupported.append(f"line {number}: {key} token")
                options.append((key, value))
            elif key not in OVERRIDDEN:
                unsupported.append(f"line {number}: {key}")
        blocks.append(_Block(patterns, tuple(options)))
        return cls([block for block in blocks if block.options], unsupported, home, local_user)

    def lookup(self, host: str) -> dict[str, list[str]]:
        """The options that apply to ``host``: the first value of each (every value for IdentityFile)."""
        found: dict[str, list[str]] = {}
        for block in self.blocks:
            if not block.matches(host):
                continue
            for key, value in block.options:
                if key in MULTIPLE:
                    found.setdefault(key, []).append(value)
                elif key not in found:
                    found[key] = [value]
        return found

    def options(self, host: str, port: int | None = None) -> HostOptions:
        """What connecting to ``host`` means by this config (``port`` given wins over the config's)."""
        found = self.lookup(host)

        def first(key: str) -> str | None:
            values = found.get(key)
            return values[0] if values else None

        hostname = first("hostname") or host
        hostname = hostname.replace("%h", host).replace("%%", "%")
        port = port if port is not None else int(first("port") or 22)
        user = first("user")
        tokens = {"h": hostname, "p": str(port), "r": user or self.local_user, "n": host, "d": self.home,
                  "u": self.local_user, "%": "%"}
        command = first("proxycommand")
        jump = first("proxyjump")
        return HostOptions(
            alias=host, hostname=hostname, port=port, user=user,
            identity_files=tuple(_expand_path(_unquote(value), tokens, self.home)
                                 for value in found.get("identityfile", []) if value.lower() != "none"),
            identities_only=(first("identitiesonly") or "no").lower() == "yes",
            proxy_command=None if command is None or command.lower() == "none" else _expand(command, tokens),
            proxy_jump=None if jump is None or jump.lower() == "none" else jump)


def _split(line: str) -> tuple[str, str]:
    """``Key value`` or ``Key=value`` (spaces around = allowed), as OpenSSH reads a line."""
    match = re.match(r"(\S+?)\s*(?:=\s*|\s+)(.*)\Z", line)
    if match is None:
        return line, ""
    return match.group(1), match.group(2).strip()


def _words(value: str) -> list[str]:
    try:
        return shlex.split(value)
    except ValueError:
        return value.split()


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) > 1 and value[0] == value[-1] == '"' else value


def _bad_tokens(value: str) -> bool:
    return any(token not in "hprnud%" for token in TOKEN.findall(value))


def _expand(value: str, tokens: dict[str, str]) -> str:
    return TOKEN.sub(lambda match: tokens.get(match.group(1), match.group(0)), value)


def _expand_path(value: str, tokens: dict[str, str], home: str) -> str:
    value = _expand(value, tokens)
    return home + value[1:] if value == "~" or value.startswith("~/") else value
