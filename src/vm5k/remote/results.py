"""What a remote (or local) operation returns: one result per host, and helpers to split OK from KO.

Why per-host results instead of exceptions: a deployment touches hundreds of hosts and a few of them
always fail. The caller decides whether a KO host is excluded, retried or fatal, so every operation
returns all the results, and :meth:`Results.raise_on_failure` turns them into one `RemoteError` that
names the failed hosts when the caller wants all-or-nothing.

>>> results = Results([HostResult("node-1", 0, "ok\\n"),
...                    HostResult("node-2", None, error="connection refused")])
>>> results.ok_hosts, results.ko_hosts
(['node-1'], ['node-2'])
>>> results["node-2"].describe()
'node-2: connection refused'
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import overload

from vm5k.errors import RemoteError

#: How many failed hosts a `RemoteError` message lists before summarising the rest.
MAX_HOSTS_IN_MESSAGE = 5


@dataclass(frozen=True)
class HostResult:
    """The outcome of one operation on one host.

    ``exit_status`` is None when the command did not finish (connection failure, timeout): ``error``
    then says why. ``stdout``/``stderr`` hold what was received, even after a timeout.

    >>> HostResult("vm-1", exit_status=0, stdout="6.1.0-18-amd64\\n").ok
    True
    >>> HostResult("vm-2", error="no SSH login: connection refused").describe()
    'vm-2: no SSH login: connection refused'
    """

    host: str
    exit_status: int | None = None
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when the operation finished with exit status 0."""
        return self.error is None and self.exit_status == 0

    def describe(self) -> str:
        """One line for logs and error messages: the host, then what went wrong (or ``ok``)."""
        if self.error is not None:
            return f"{self.host}: {self.error}"
        if self.exit_status == 0:
            return f"{self.host}: ok"
        last = self.stderr.strip().splitlines()[-1:] or self.stdout.strip().splitlines()[-1:]
        detail = f": {last[0][:200]}" if last else ""
        return f"{self.host}: exit status {self.exit_status}{detail}"


class Results(Sequence[HostResult]):
    """The per-host results of one operation, in the order the hosts were given.

    Index by position or by host name (``results["node-3"]``).

    >>> results = Results([HostResult("vm-1", 0, "1\\n"), HostResult("vm-2", error="timed out")])
    >>> results["vm-1"].stdout, results.ok_hosts, results.ko_hosts, results.all_ok
    ('1\\n', ['vm-1'], ['vm-2'], False)
    """

    def __init__(self, results: Iterable[HostResult] = ()) -> None:
        self._results = list(results)
        self._by_host = {result.host: result for result in self._results}

    @overload
    def __getitem__(self, key: int) -> HostResult: ...
    @overload
    def __getitem__(self, key: slice) -> Sequence[HostResult]: ...
    @overload
    def __getitem__(self, key: str) -> HostResult: ...

    def __getitem__(self, key: int | slice | str) -> HostResult | Sequence[HostResult]:
        if isinstance(key, str):
            return self._by_host[key]
        return self._results[key]

    def __len__(self) -> int:
        return len(self._results)

    def __iter__(self) -> Iterator[HostResult]:
        return iter(self._results)

    def __repr__(self) -> str:
        return f"Results(ok={self.ok_hosts}, ko={self.ko_hosts})"

    @property
    def by_host(self) -> dict[str, HostResult]:
        return dict(self._by_host)

    @property
    def ok(self) -> list[HostResult]:
        return [result for result in self._results if result.ok]

    @property
    def ko(self) -> list[HostResult]:
        return [result for result in self._results if not result.ok]

    @property
    def ok_hosts(self) -> list[str]:
        return [result.host for result in self.ok]

    @property
    def ko_hosts(self) -> list[str]:
        return [result.host for result in self.ko]

    @property
    def all_ok(self) -> bool:
        return all(result.ok for result in self._results)

    def raise_on_failure(self, what: str = "remote operation") -> Results:
        """Return self if every host succeeded, else raise a `RemoteError` naming the failed hosts.

        >>> Results([HostResult("h1", 1, stderr="boom")]).raise_on_failure("apt-get")
        Traceback (most recent call last):
        ...
        vm5k.errors.RemoteError: apt-get failed on 1 of 1 hosts: h1: exit status 1: boom
        """
        failed = self.ko
        if not failed:
            return self
        shown = "; ".join(result.describe() for result in failed[:MAX_HOSTS_IN_MESSAGE])
        more = len(failed) - MAX_HOSTS_IN_MESSAGE
        if more > 0:
            shown += f"; and {more} more"
        raise RemoteError(f"{what} failed on {len(failed)} of {len(self)} hosts: {shown}")
