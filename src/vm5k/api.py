"""vm5k as a library: deploy a fleet, get its VMs back as objects, run commands on them, tear it down.

The ``vm5k`` and ``vm5k_max_vms`` commands are thin shells over these functions: the same keywords (the
commands' long option names), the same defaults, the same checks and the same one-line errors.

>>> import vm5k
>>> plan = vm5k.plan(n_vm=2, infile=None, resources="rennes:1", walltime="0:30:00")  # doctest: +SKIP
>>> run = vm5k.deploy(n_vm=2, resources="rennes:1", walltime="0:30:00", outdir="xp1")  # doctest: +SKIP
>>> [vm.ip for vm in run.vms]  # doctest: +SKIP
['10.158.0.1', '10.158.0.2']
>>> run.run("uname -r").all_ok  # doctest: +SKIP
True
>>> run.destroy()  # doctest: +SKIP

Errors: bad input raises `UsageError` (nothing touched); once a run has a record, `deploy` returns the
`Run` (``run.ko`` names the KO VMs and why) or, when a step fails, raises `DeploymentError` whose ``.run``
is the `Run`, ready for ``resume()`` or ``destroy()``; Ctrl-C raises `Interrupted` (state saved).

Nothing here prints or exits: progress goes through `logging` (logger ``vm5k``), and ``progress=True``
asks for the command's display (log lines on stderr, live bars on a terminal). Everything blocking runs
the run's coroutines on a private event loop in a thread (`vm5k.loop`), so these calls work inside Jupyter
and asyncio programs; the ``a``-prefixed methods and `deploy_async` are the same for async callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vm5k import outdir as outdir_files
from vm5k.errors import DeploymentError, Interrupted, UsageError, Vm5kError
from vm5k.log import LOGGER_NAME, console, remove_file_handler, setup_logging
from vm5k.loop import LoopThread
from vm5k.options import keywords_to_options, read_input, request_from_options
from vm5k.placement import CountedFit, Limits, MaxVms, counted_fit
from vm5k.placement import max_vms as count_max_vms
from vm5k.remote.results import HostResult, Results
from vm5k.request import Request, build_request, parse_vm_template
from vm5k.runstate import RunRecord
from vm5k.topology import VM, VM_OK, VM_STOPPED, Host, Topology

if TYPE_CHECKING:
    from vm5k.remote import SshRunner

log = logging.getLogger(__name__)

#: What `Run.run`, `Run.put` and `Run.get` act on: VMs or hosts (objects or names); None: every VM.
Targets = Iterable["VM | Host | str"] | VM | Host | str | None


def _workflow() -> Any:
    """The workflow, imported when a run needs it (it pulls in the SSH and HTTP clients, which
    ``import vm5k``, ``vm5k --help`` and input errors do not need)."""
    import importlib

    return importlib.import_module("vm5k.workflow")


def _reporter(progress: bool) -> Any:
    from vm5k.progress import Reporter

    if progress and console() is None and not _has_console_handler():
        setup_logging(0)
    return Reporter(live=None if progress else False)


def _has_console_handler() -> bool:
    return any(getattr(handler, "_vm5k_handler", None) == "console"
               for handler in logging.getLogger(LOGGER_NAME).handlers)


def _request(options: dict[str, Any], *, dry_run: bool, default_outdir: str | None = None) -> Request:
    values = keywords_to_options(options)
    if dry_run:
        values["dry_run"] = True
    default = default_outdir or outdir_files.default_outdir()
    request, warnings = request_from_options(values, default_outdir=default)
    for warning in warnings:
        log.warning("%s", warning)
    return request


@contextlib.contextmanager
def _errors_carry(run: Run | None) -> Iterator[None]:
    """Once a run has a record, a failure hands the caller the `Run` (``error.run``), to look at it,
    resume it or destroy it: `Interrupted` and `DeploymentError` as they are, any other `Vm5kError` (the
    platform's, the hosts') as a `DeploymentError`; bad input stays a `UsageError`."""
    try:
        yield
    except (Interrupted, DeploymentError) as error:
        error.run = run
        raise
    except UsageError:
        raise
    except Vm5kError as error:
        raise DeploymentError(str(error), run=run) from error


# -- the run ------------------------------------------------------------------------------------------------


class Run:
    """One vm5k run, as recorded in its outdir: its VMs and hosts, and what can be done with them.

    The outdir is the single truth: a `Run` reads it when loaded and after every operation, and every
    operation writes it as the command does, so ``vm5k --resume``/``--destroy OUTDIR`` work on a run made
    from Python and `Run.load` on one made by the command. A `Run` keeps its SSH connections (to run
    commands and copy files) until `close` or the end of its ``with`` block.

    >>> with vm5k.Run.load("xp1") as run:  # doctest: +SKIP
    ...     print(run.status, [vm.id for vm in run.vms], run.ko)
    done ['vm-1', 'vm-2'] {}
    """

    def __init__(self, outdir: str | Path, *, api: str | None = None, ssh_config: str | None = None,
                 progress: bool = False) -> None:
        self.outdir = Path(outdir)
        self.api = api
        self.ssh_config = ssh_config
        self.progress = progress
        self._loop: LoopThread | None = None
        self._ssh: SshRunner | None = None
        self.topology = Topology()
        self.record: RunRecord
        #: what the last operation asked with ``dry_run=True`` would have done (None after a real one)
        self.change_plan: str | None = None
        self.reload()

    @classmethod
    def load(cls, outdir: str | Path, *, api: str | None = None, ssh_config: str | None = None,
             progress: bool = False) -> Run:
        """The run recorded in `outdir` (made by `deploy`, `plan` or the command). `api` and `ssh_config`
        say where its platform is now, when it moved (as ``--api``/``--ssh-config`` with ``--resume``).

        >>> run = vm5k.Run.load("xp1")  # doctest: +SKIP
        """
        return cls(outdir, api=api, ssh_config=ssh_config, progress=progress)

    def reload(self) -> Run:
        """Read the outdir again (another process may have changed the run)."""
        state = self.outdir / outdir_files.STATE_FILE
        if not state.exists():
            raise UsageError(f"{self.outdir} holds no vm5k run (no {outdir_files.STATE_FILE})")
        self.topology = outdir_files.read_state(self.outdir)
        self.record = RunRecord.load(self.topology)
        return self

    # -- what the record says ------------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        return self.record.run_id

    @property
    def platform(self) -> str:
        return self.record.platform

    @property
    def status(self) -> str:
        """``running``, ``interrupted``, ``failed``, ``done`` or ``destroyed``."""
        return self.record.status

    @property
    def message(self) -> str | None:
        """Why the run stopped, when it did not end well."""
        return self.record.message

    @property
    def vms(self) -> list[VM]:
        """The run's VMs (id, ip, mac, host, state, reason...), in id order."""
        from vm5k.topology import natural_key

        return sorted(self.topology.vms(), key=lambda vm: natural_key(vm.id))

    @property
    def hosts(self) -> list[Host]:
        """The run's hosts that hold VMs."""
        return [host for host in self.topology.hosts() if host.vms]

    @property
    def ko(self) -> dict[str, str]:
        """VM id → why it is not OK, for every VM that does not answer SSH (a VM stopped on purpose,
        state ``stopped``, is not KO)."""
        return {vm.id: vm.reason or vm.state for vm in self.vms if vm.state not in (VM_OK, VM_STOPPED)}

    @property
    def job_id(self) -> str | None:
        """The run's reservation as the `job_id` keyword takes it (``rennes:1001``, or
        ``rennes:1001,nancy:77``), to deploy another fleet in it after ``destroy(keep_job=True)``; None
        where nothing is reserved (``--hosts``).

        >>> vm5k.deploy(n_vm=8, job_id=run.job_id, outdir="xp1-8")  # doctest: +SKIP
        """
        from vm5k.platforms.grid5000.record import Grid5000Record

        return ",".join(job.label for job in Grid5000Record.load(self.topology).jobs) or None

    @property
    def ok(self) -> bool:
        """True when every VM answers SSH (and the program, if any, succeeded)."""
        return self.record.status == "done" and not self.record.dry_run

    def __repr__(self) -> str:
        return (f"<vm5k.Run {self.run_id} {self.status} on {self.platform}: {len(self.vms)} VMs, "
                f"{len(self.ko)} KO, outdir {self.outdir}>")

    def plot(self, outdir: str | Path | None = None) -> list[Path]:
        """Draw the run as ``--plot`` does: the topology (sites → clusters → hosts → VMs by state) and the
        timeline (each host's deploy, set-up and image copy; each VM's creation, start and SSH login, from
        the times the run recorded), as PNG and SVG into `outdir` (the run's outdir by default); returns
        the paths written. Reads only the outdir: a run of any status, even destroyed, can be drawn.

        >>> [path.name for path in run.plot("pictures")]  # doctest: +SKIP
        ['topology.png', 'topology.svg', 'timeline.png', 'timeline.svg']
        """
        from vm5k.plot import write_pictures  # matplotlib: only when a picture is asked for

        folder = Path(outdir) if outdir is not None else self.outdir
        folder.mkdir(parents=True, exist_ok=True)
        return write_pictures(self.topology, folder)

    # -- changing the run ------------------------------------------------------------------------------

    def _operate(self, operation: str, body: Any, *, take_over: bool = False) -> Run:
        workflow = _workflow()
        self._close_ssh()  # the run's hosts and VMs may change: connections are opened again when needed
        context = workflow.stored_run(self.outdir, operation, _reporter(self.progress), self._event_loop(),
                                      api=self.api, ssh_config=self.ssh_config, take_over=take_over)
        try:
            with _errors_carry(self):
                body(workflow, context)
        finally:
            context.close()
            remove_file_handler()
            self.reload()
        return self

    def resume(self) -> Run:
        """Go on with the run where it stopped (as ``vm5k --resume OUTDIR``): the steps not done yet, KO VMs
        given another chance; a run planned by `plan` is deployed. Refused, in one line, for a destroyed
        run or one whose reservation is over.

        >>> vm5k.Run.load("xp1").resume().ok  # doctest: +SKIP
        True
        """
        def body(workflow: Any, context: Any) -> None:
            from vm5k.change import finish_pending
            from vm5k.migrate import settle_interrupted

            workflow.check_resumable(context)
            context.record.dry_run = False
            context.record.status = "running"
            settle_interrupted(context)  # a migration cut halfway: the VM is kept where it runs
            finish_pending(context)  # a stop, start, reboot, reset or removal cut halfway: done again
            workflow.execute(context)

        return self._operate("resume", body)

    def destroy(self, *, keep_job: bool = False) -> Run:
        """Remove the run's VMs, disks and service from its hosts, then end its reservation unless
        `keep_job` (as ``vm5k --destroy OUTDIR [--keep-job]``). A process holding the run (a deployment
        going on) is asked to stop first. A run whose reservation is already over is closed without
        contacting its hosts.

        >>> vm5k.Run.load("xp1").destroy(keep_job=True).status  # doctest: +SKIP
        'destroyed'
        """
        def body(workflow: Any, context: Any) -> None:
            workflow.destroy(context, keep_job=keep_job)

        return self._operate("destroy", body, take_over=True)

    async def aresume(self) -> Run:
        """`resume` for async callers."""
        return await asyncio.to_thread(self.resume)

    async def adestroy(self, *, keep_job: bool = False) -> Run:
        """`destroy` for async callers."""
        return await asyncio.to_thread(functools.partial(self.destroy, keep_job=keep_job))

    # -- changing the fleet --------------------------------------------------------------------------

    def _change(self, operation: str, vms: Any, dry_run: bool, grace: Any = None) -> Run:
        from vm5k import change

        wait = change.check_grace(change.DEFAULT_GRACE if grace is None else grace)
        if dry_run:  # read from the record alone: no lock taken, no host contacted, nothing written
            self.reload()
            change.check_changeable(self.record, self.outdir, operation, self.topology)
            self.change_plan = change.describe(operation, change.select_vms(self.topology, vms, operation),
                                               grace=wait)
            log.info("dry run, nothing touched: %s", self.change_plan)
            return self
        change.select_vms(self.topology, vms, operation)  # an unknown VM is refused before the lock
        self.change_plan = None

        def body(workflow: Any, context: Any) -> None:
            change.change(context, operation, vms, grace=wait)

        return self._operate(operation, body)

    def stop(self, vms: Any = None, *, grace: float = 60, dry_run: bool = False) -> Run:
        """Shut these VMs down (every VM when `vms` is None; ids, VM objects or ``"vm-1,vm-2"``), forced
        off after `grace` seconds, as ``vm5k --stop OUTDIR [VMS] [--grace S]``. Their state becomes
        ``stopped`` (not KO: ``run.ok`` stays true); disks and addresses are kept for `start`.
        `dry_run`: only say what would happen (``run.change_plan``), touching nothing.

        >>> run.stop(["vm-2"], grace=10).vms[1].state  # doctest: +SKIP
        'stopped'
        """
        return self._change("stop", vms, dry_run, grace)

    def start(self, vms: Any = None, *, dry_run: bool = False) -> Run:
        """Start these VMs again (every VM when None) and wait until they answer SSH (``vm5k --start``).

        >>> run.start("vm-2").ko  # doctest: +SKIP
        {}
        """
        return self._change("start", vms, dry_run)

    def reboot(self, vms: Any = None, *, grace: float = 60, dry_run: bool = False) -> Run:
        """Reboot these VMs (every VM when None): a clean shutdown forced off after `grace` seconds, a
        start, a wait until they answer SSH (``vm5k --reboot``). The guest's uptime starts again.

        >>> run.reboot().ok  # doctest: +SKIP
        True
        """
        return self._change("reboot", vms, dry_run, grace)

    def reset(self, vms: Any = None, *, dry_run: bool = False) -> Run:
        """Give these VMs (every VM when None) a fresh disk from their backing file and boot them on it,
        with the same id, IP, MAC and host (``vm5k --reset``); what they wrote is gone, their new host
        keys replace the old ones in the outdir's ``known_hosts``.

        >>> run.reset("vm-1").ok  # doctest: +SKIP
        True
        """
        return self._change("reset", vms, dry_run)

    def add(self, n_vm: int | str, *, vm_template: str | None = None, dry_run: bool = False) -> Run:
        """Add `n_vm` VMs to the run (``vm5k --resume OUTDIR -n TOTAL [-t TEMPLATE]``, where -n is the new
        total): new ids (never one the run had), the run's template unless `vm_template` is given, placed
        on the run's hosts by its distribution and capacity rule, addresses from its pool, names in its
        DNS; waited until they answer SSH. No room: `UsageError` before anything starts.

        >>> [vm.id for vm in run.add(2).vms]  # doctest: +SKIP
        ['vm-1', 'vm-2', 'vm-3', 'vm-4']
        """
        from vm5k import resize

        count = resize.check_count(n_vm)
        template = parse_vm_template(vm_template) if vm_template is not None else None
        if dry_run:
            self.reload()
            from vm5k.change import check_changeable
            from vm5k.placement import PlacementPolicy

            check_changeable(self.record, self.outdir, "add VMs to", self.topology)
            policy = self.record.placement or PlacementPolicy()
            after = resize.planned_additions(self.topology, count, template, policy)
            self.change_plan = resize.describe_additions(self.topology, after)
            log.info("dry run, nothing touched: %s", self.change_plan)
            return self
        self.change_plan = None

        def body(workflow: Any, context: Any) -> None:
            resize.add(context, count, template)

        return self._operate("add", body)

    def remove(self, vms: Any, *, dry_run: bool = False) -> Run:
        """Remove these VMs from the run (``vm5k --remove OUTDIR vm-7,vm-8``): their domains and disks on
        every host, their addresses (free for the next VMs) and DNS names; their ids are never given again.

        >>> [vm.id for vm in run.remove("vm-2").vms]  # doctest: +SKIP
        ['vm-1']
        """
        from vm5k import resize
        from vm5k.change import check_changeable, select_vms

        if vms is None:
            raise UsageError("remove: name the VMs to remove (vm-7,vm-8); destroy() removes a whole run")
        if dry_run:
            self.reload()
            check_changeable(self.record, self.outdir, "remove VMs from", self.topology)
            self.change_plan = resize.describe_removal(select_vms(self.topology, vms, "remove"))
            log.info("dry run, nothing touched: %s", self.change_plan)
            return self
        select_vms(self.topology, vms, "remove")
        self.change_plan = None

        def body(workflow: Any, context: Any) -> None:
            resize.remove(context, vms)

        return self._operate("remove", body)

    async def aadd(self, n_vm: int | str, *, vm_template: str | None = None, dry_run: bool = False) -> Run:
        """`add` for async callers."""
        return await asyncio.to_thread(functools.partial(self.add, n_vm, vm_template=vm_template,
                                                         dry_run=dry_run))

    async def aremove(self, vms: Any, *, dry_run: bool = False) -> Run:
        """`remove` for async callers."""
        return await asyncio.to_thread(functools.partial(self.remove, vms, dry_run=dry_run))

    def migrate(self, moves: Any, *, parallel: int = 2, dry_run: bool = False) -> Run:
        """Live-migrate VMs to other hosts of the run (``vm5k --migrate OUTDIR vm-3=paradoxe-2[,...]``):
        `moves` maps VM ids to hosts (ids or short names), or is the shell's ``"vm-3=paradoxe-2"`` text;
        at most `parallel` at a time. The VMs keep running (same id, IP, MAC, name; processes and TCP
        connections survive); the outdir shows their new hosts. Refused in one line before anything moves:
        an unknown VM or host, another accelerator, no room on the destination. A migration that fails
        raises `DeploymentError` (the VM runs on at its source).

        >>> run.migrate({"vm-3": "paradoxe-2"}).vms[2].host  # doctest: +SKIP
        'paradoxe-2.rennes.grid5000.fr'
        """
        from vm5k import migrate as migration

        if isinstance(parallel, bool) or not isinstance(parallel, int) or not 1 <= parallel <= 64:
            raise UsageError(f"parallel: {parallel!r} must be a whole number from 1 to 64")
        from vm5k.placement import PlacementPolicy

        self.reload()
        from vm5k.change import check_changeable

        check_changeable(self.record, self.outdir, "migrate", self.topology)
        planned = migration.plan_moves(self.topology, moves, self.record.placement or PlacementPolicy())
        if dry_run:
            self.change_plan = migration.describe(planned)
            log.info("dry run, nothing touched: %s", self.change_plan)
            return self
        self.change_plan = None

        def body(workflow: Any, context: Any) -> None:
            migration.migrate(context, moves, parallel)

        return self._operate("migrate", body)

    async def amigrate(self, moves: Any, *, parallel: int = 2, dry_run: bool = False) -> Run:
        """`migrate` for async callers."""
        return await asyncio.to_thread(functools.partial(self.migrate, moves, parallel=parallel,
                                                         dry_run=dry_run))

    async def astop(self, vms: Any = None, *, grace: float = 60, dry_run: bool = False) -> Run:
        """`stop` for async callers."""
        return await asyncio.to_thread(functools.partial(self.stop, vms, grace=grace, dry_run=dry_run))

    async def astart(self, vms: Any = None, *, dry_run: bool = False) -> Run:
        """`start` for async callers."""
        return await asyncio.to_thread(functools.partial(self.start, vms, dry_run=dry_run))

    async def areboot(self, vms: Any = None, *, grace: float = 60, dry_run: bool = False) -> Run:
        """`reboot` for async callers."""
        return await asyncio.to_thread(functools.partial(self.reboot, vms, grace=grace, dry_run=dry_run))

    async def areset(self, vms: Any = None, *, dry_run: bool = False) -> Run:
        """`reset` for async callers."""
        return await asyncio.to_thread(functools.partial(self.reset, vms, dry_run=dry_run))

    # -- using the fleet ---------------------------------------------------------------------------------

    def _targets(self, on: Targets) -> list[str]:
        if on is None:
            return [vm.id for vm in self.vms]
        items: Iterable[Any] = [on] if isinstance(on, (VM, Host, str)) else on
        names = []
        known = {vm.id for vm in self.topology.vms()} | {host.id for host in self.topology.hosts()}
        for item in items:
            name = item.id if isinstance(item, (VM, Host)) else item
            if not isinstance(name, str) or name not in known:
                raise UsageError(f"on: {name!r} is neither a VM nor a host of run {self.run_id}")
            names.append(name)
        if not names:
            raise UsageError("on: no VM or host given")
        return list(dict.fromkeys(names))

    async def _runner(self) -> SshRunner:
        """The run's SSH connections to its VMs and hosts (the outdir's ssh_config), opened on first use."""
        if self._ssh is None:
            from vm5k.remote import SshRunner, SshSettings

            settings = SshSettings(config_files=(self.outdir / outdir_files.SSH_CONFIG,),
                                   known_hosts=self.outdir / "known_hosts", record_new_host_keys=True)
            self._ssh = SshRunner(settings)
        return self._ssh

    def _event_loop(self) -> LoopThread:
        if self._loop is None or self._loop.closed:
            self._loop = LoopThread()
        return self._loop

    def run(self, command: str | Sequence[str], *, on: Targets = None,
            timeout: float | None = None) -> Results:
        """Run `command` (a shell line, or an argument list) on VMs or hosts in parallel (every VM when `on`
        is None); one result per target, unreachable ones included (``.ok``, ``.exit_status``,
        ``.stdout``, ``.stderr``, ``.error``): one bad VM never raises.

        >>> results = run.run("nproc", on=run.vms[:2], timeout=60)  # doctest: +SKIP
        >>> {r.host: r.stdout.strip() for r in results}  # doctest: +SKIP
        {'vm-1': '1', 'vm-2': '1'}
        """
        return self._event_loop().run(self._run(command, on, timeout))

    async def arun(self, command: str | Sequence[str], *, on: Targets = None,
                   timeout: float | None = None) -> Results:
        """`run` for async callers."""
        return await self._event_loop().run_async(self._run(command, on, timeout))

    async def _run(self, command: str | Sequence[str], on: Targets, timeout: float | None) -> Results:
        argv = ["sh", "-c", command] if isinstance(command, str) else [str(part) for part in command]
        if not argv or not argv[-1].strip():
            raise UsageError("run: empty command")
        names = self._targets(on)
        return await (await self._runner()).run(names, argv, timeout=timeout)

    def put(self, local: str | Path, remote: str, *, on: Targets = None,
            timeout: float | None = None) -> Results:
        """Copy the local file `local` to `remote` on VMs or hosts (every VM when `on` is None); a `remote`
        ending with ``/`` is a folder that gets the file under its own name.

        >>> run.put("bench.sh", "/root/", on=run.vms).all_ok  # doctest: +SKIP
        True
        """
        return self._event_loop().run(self._put(local, remote, on, timeout))

    async def aput(self, local: str | Path, remote: str, *, on: Targets = None,
                   timeout: float | None = None) -> Results:
        """`put` for async callers."""
        return await self._event_loop().run_async(self._put(local, remote, on, timeout))

    async def _put(self, local: str | Path, remote: str, on: Targets, timeout: float | None) -> Results:
        source = Path(local)
        if not source.is_file():
            raise UsageError(f"put: no such file: {source}")
        dest = remote + source.name if remote.endswith("/") else remote
        names = self._targets(on)
        return await (await self._runner()).put(names, source, dest, mode=source.stat().st_mode & 0o777,
                                                timeout=timeout)

    def get(self, remote: str, local_dir: str | Path, *, on: Targets = None,
            timeout: float | None = None) -> Results:
        """Fetch `remote` from VMs or hosts (every VM when `on` is None) into ``local_dir/<vm or host>/``.

        >>> run.get("/var/log/syslog", "logs", on="vm-1")  # doctest: +SKIP
        """
        return self._event_loop().run(self._get(remote, local_dir, on, timeout))

    async def aget(self, remote: str, local_dir: str | Path, *, on: Targets = None,
                   timeout: float | None = None) -> Results:
        """`get` for async callers."""
        return await self._event_loop().run_async(self._get(remote, local_dir, on, timeout))

    async def _get(self, remote: str, local_dir: str | Path, on: Targets, timeout: float | None) -> Results:
        names = self._targets(on)
        name = Path(remote).name
        if not name:
            raise UsageError(f"get: {remote!r} names no file")
        for target in names:
            (Path(local_dir) / target).mkdir(parents=True, exist_ok=True)
        runner = await self._runner()
        return await runner.get(names, remote, str(Path(local_dir) / "{host}" / name), timeout=timeout)

    # -- connections ---------------------------------------------------------------------------------------

    def _close_ssh(self) -> None:
        if self._ssh is not None:
            runner, self._ssh = self._ssh, None
            try:
                self._event_loop().run(runner.close())
            except Exception as error:  # closing must not hide what the caller is doing
                log.debug("closing the run's SSH connections: %s", error)

    def close(self) -> None:
        """Close the run's SSH connections and its event loop (a ``with`` block does it)."""
        self._close_ssh()
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- deploying ----------------------------------------------------------------------------------------------


def deploy(*, n_vm: int | str | None = None, infile: str | Path | None = None, job_id: Any = None,
           walltime: int | str | None = None, kavlan: bool = False, resources: Any = None,
           blacklisted: Any = None, env_name: str | None = None, env_file: str | None = None,
           forcedeploy: bool = False, nodeploy: bool = False, host_packages: Any = None,
           packages_upgrade: bool = False, platform: str | None = None, hosts: Any = None,
           vm_network: Any = None, queue: str | None = None, host_reserve: int | str | None = None,
           cpu_overcommit: float | str | None = None, vm_template: str | None = None,
           vm_backing_file: str | None = None, vm_disk_location: str | None = None,
           vm_distribution: str | None = None, vm_clean_disks: bool = False,
           boot_timeout: int | str | None = None, seed: int | str | None = None, program: str | None = None,
           plot: bool = False, outdir: str | Path | None = None, api: str | None = None,
           ssh_config: str | Path | None = None, progress: bool = False) -> Run:
    """Deploy a fleet of VMs, as ``vm5k`` does with the same options; returns the `Run` once every step
    has run (``run.ok``: every VM answers SSH; ``run.ko``: the others and why).

    Keywords are the command's long options, with its defaults (None: not given, e.g. 30 VMs, 1:00:00,
    ``grid5000``): strings as on the command line, or Python values (``resources=["rennes:2", "nancy"]``,
    ``walltime=3600``, ``hosts=["h1", "h2"]``). `progress`: show the command's progress display.

    >>> run = vm5k.deploy(n_vm=4, resources="rennes:2", walltime="0:30:00", outdir="xp1")  # doctest: +SKIP
    >>> run.ok, len(run.vms)  # doctest: +SKIP
    (True, 4)
    """
    options = {name: value for name, value in locals().items() if name != "progress"}
    run: Run = _execute_request(_request(options, dry_run=False), progress)
    return run


async def deploy_async(**options: Any) -> Run:
    """`deploy` for async callers (same keywords); the caller's event loop goes on meanwhile.

    >>> run = await vm5k.deploy_async(n_vm=2, resources="rennes:1", outdir="xp2")  # doctest: +SKIP
    """
    return await asyncio.to_thread(functools.partial(deploy, **options))


def _deploy(request: Request, progress: bool) -> Run:
    workflow = _workflow()
    loop = LoopThread()
    try:
        context = workflow.new_run(request, _reporter(progress), loop)
    except BaseException:
        loop.close()
        raise
    run: Run | None = None
    try:
        run = Run(context.outdir, progress=progress)
        run._loop = loop
        with _errors_carry(run):
            workflow.execute(context)
    finally:
        context.close()
        remove_file_handler()
        if run is not None:
            run.reload()
        else:
            loop.close()
    return run


# -- planning -----------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """What a deployment would do, touching nothing: where each VM goes, and the reservation.

    `text` is what ``vm5k --dry-run`` prints; `outdir` holds the plan when one was given (then
    ``Run.load(outdir).resume()`` deploys it, as ``vm5k --resume`` does after ``--dry-run``).

    >>> plan = vm5k.plan(infile="examples/two_sites.xml", walltime="2:00:00")  # doctest: +SKIP
    >>> plan.placement["orion-1"]  # doctest: +SKIP
    ['vm-9', 'vm-10', 'vm-11', 'vm-12']
    """

    platform: str | None  # None: planned from a topology file alone, no platform asked
    topology: Topology
    text: str
    outdir: Path | None = None
    files: list[Path] = field(default_factory=list)  # what was written in `outdir`

    @property
    def vms(self) -> list[VM]:
        return self.topology.vms()

    @property
    def hosts(self) -> list[Host]:
        return [host for host in self.topology.hosts() if host.vms]

    @property
    def placement(self) -> dict[str, list[str]]:
        """Host id → the ids of the VMs it would hold."""
        return {host.id: [vm.id for vm in host.vms] for host in self.hosts}


def plan(*, outdir: str | Path | None = None, progress: bool = False, **options: Any) -> Plan:
    """The dry run, as data (same keywords as `deploy`): nothing reserved, nothing started. With `outdir`,
    the plan is also written there, ready for ``Run.load(outdir).resume()``.

    >>> plan = vm5k.plan(n_vm=100, resources="grid5000:20", walltime="1:00:00")  # doctest: +SKIP
    >>> print(plan.text)  # doctest: +SKIP
    """
    if outdir is not None:
        written: Plan = _execute_request(_request({**options, "outdir": outdir}, dry_run=True), progress)
        return written
    with tempfile.TemporaryDirectory(prefix="vm5k-plan-") as scratch:
        result: Plan = _execute_request(_request({**options, "outdir": Path(scratch) / "plan"},
                                                 dry_run=True), progress)
    result.outdir, result.files = None, []
    return result


def _execute_request(request: Request, progress: bool) -> Any:
    """A checked request, run: a `Plan` for a dry run, else a `Run` (the one seam of the command's tests)."""
    return _plan(request, progress) if request.dry_run else _deploy(request, progress)


def _plan(request: Request, progress: bool) -> Plan:
    workflow = _workflow()
    folder = Path(request.outdir)
    try:
        if not request.needs_platform:
            topology, text, written = workflow.plan_file(request)
            return Plan(None, topology, text, folder, written)
        with LoopThread() as loop:
            context = workflow.new_run(request, _reporter(progress), loop)
            try:
                workflow.execute(context)
                text = context.platform.plan_text(context.topology)
            finally:
                context.close()
        files = [context.outdir / outdir_files.INITIAL_XML, context.outdir / outdir_files.STATE_FILE]
        return Plan(context.record.platform, context.topology, text, folder, files)
    finally:
        remove_file_handler()


# -- counting ---------------------------------------------------------------------------------------------


@dataclass
class MaxVmsResult:
    """How many VMs of a template fit: `fit` per host and in total, `counted` for ``-r NAME:N``.

    >>> result = vm5k.max_vms(resources="paradoxe", vm_template='<vm mem="4096"/>')  # doctest: +SKIP
    >>> result.total, result.per_host["paradoxe-1.rennes.grid5000.fr"]  # doctest: +SKIP
    (1488, 31)
    """

    fit: MaxVms
    limits: Limits
    hosts: list[Host]
    counted: list[CountedFit]

    @property
    def total(self) -> int:
        return self.fit.total

    @property
    def per_host(self) -> dict[str, int | None]:
        return self.fit.per_host


def max_vms(*, vm_template: str, infile: str | Path | None = None, job_id: Any = None, resources: Any = None,
            blacklisted: Any = None, api: str | None = None, ssh_config: str | Path | None = None,
            host_reserve: int | str | None = None, cpu_overcommit: float | str | None = None) -> MaxVmsResult:
    """How many VMs of `vm_template` fit on hosts, as ``vm5k_max_vms`` (give one of `infile`, `job_id`,
    `resources`).

    >>> vm5k.max_vms(job_id="rennes:42", vm_template='<vm mem="2048"/>').total  # doctest: +SKIP
    12
    """
    where = [name for name, value in (("infile", infile), ("job_id", job_id), ("resources", resources))
             if value is not None]
    if len(where) != 1:
        raise UsageError("give one of -i, -j, -r (infile, job_id, resources)")
    if blacklisted is not None and resources is None:
        raise UsageError("-b goes with -r (it leaves hosts out of the reference hardware)")
    template = parse_vm_template(vm_template)
    values = keywords_to_options({"job_id": job_id, "resources": resources, "blacklisted": blacklisted,
                                  "api": api, "ssh_config": ssh_config, "host_reserve": host_reserve,
                                  "cpu_overcommit": cpu_overcommit})
    request, _ = build_request({**values, "outdir": "."})
    hosts: list[Host]
    if infile is None:
        hosts = _workflow().max_vms_hosts(request)
    else:
        topo = Topology.from_xml(read_input(str(infile), "-i"))
        hosts = [Host(host.id, host.capacity) for host in topo.hosts()]  # the file's VMs are not counted
        if not hosts:
            raise UsageError(f"-i: {infile} names no host")
        if all(host.capacity is None for host in hosts):
            raise UsageError(f"-i: the hosts of {infile} carry no capacity (ram and cores attributes); "
                             "use -j or -r to read it from Grid'5000")
    fit = count_max_vms(hosts, template, request.placement.limits)
    counted = []
    for element in request.resources if resources is not None else ():
        if element.count is not None:  # -r site:N: what N of its hosts hold (the platform marks them)
            label = f"{element.name}:{element.count}"
            members = [host.id for host in hosts if label in host.extra.get("counted", ())]
            counted.append(counted_fit(fit, members, label, element.count))
    return MaxVmsResult(fit, request.placement.limits, hosts, counted)


__all__ = ["HostResult", "MaxVmsResult", "Plan", "Results", "Run", "deploy", "deploy_async", "max_vms",
           "plan"]
