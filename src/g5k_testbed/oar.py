"""OAR for one site: job submission, deletion and the job life cycle on the testbed's clock.

`waiting → launching → running [→ finishing] → terminated | error`: a job launches at its
`scheduled_at`, runs `launch_delay` seconds later, and ends at its walltime (`error`, as OAR kills it)
or when its command ends (`terminated`; the testbed knows how long `sleep N` lasts and treats every
other command as running until the walltime). When its nodes must be rebooted (`needs_finishing`: a
deploy job's nodes go back to the standard environment), it stays `finishing`, its nodes held, until
`finished()`; a job due to launch on such a node waits for it. Time only moves in `advance(now)`,
which replays every due event in date order, so a clock that jumps a day ahead gives the same history
as one that ticked through it.
"""

from __future__ import annotations

import heapq
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from g5k_testbed.jobs import FINAL_STATES, Job
from g5k_testbed.oar_grammar import ResourceRequest, format_walltime, parse_resources
from g5k_testbed.oar_properties import Predicate, compile_filter
from g5k_testbed.oar_scheduler import NotEnoughResources, Placement, SiteScheduler
from g5k_testbed.timefmt import format_paris

DEFAULT_WALLTIME = 3600
#: How long the gantt keeps a `finishing` job's nodes after its end (the expected reboot time): planners
#: see them busy that long, not until the job's walltime; a launch due while they still reboot waits.
FINISHING_HOLD = 5
COMPACT_BUDGET = 0.05  # seconds of gantt compaction per request or tick
_SLEEP = re.compile(r"^\s*sleep\s+(\d+)\s*$")


class OarError(Exception):
    """A request OAR refuses; `status` is the HTTP status g5k-api answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Change:
    """Something the rest of the testbed must react to (vlans back to DEFAULT, subnets for DHCP)."""

    kind: str  # "started" | "ended"
    job: Job


@dataclass
class IdCounter:
    """The last id handed out (OAR job ids, event ids): one per testbed, shared by its sites."""

    value: int = 0

    def next(self) -> int:
        self.value += 1
        return self.value


@dataclass
class OarSite:
    """The jobs of one site, with their scheduler."""

    site: str
    scheduler: SiteScheduler
    job_ids: IdCounter
    event_ids: IdCounter
    launch_delay: int = 1
    jobs: dict[int, Job] = field(default_factory=dict)
    _events: list[tuple[int, int, int, str]] = field(default_factory=list)
    _seq: int = 0
    _dirty_gantt: bool = False
    _compact_cursor: int = 0  # a compaction pass cut short resumes after this job id
    dirty: set[int] = field(default_factory=set)  # jobs changed since the testbed last saved them
    #: whether an ending job must go through `finishing` (its nodes rebooted) before its final state
    needs_finishing: Callable[[Job], bool] = lambda job: False
    _postponed: set[int] = field(default_factory=set)  # due to launch, waiting for a finishing job's nodes

    # ------------------------------------------------------------------ helpers
    def _push(self, when: int, uid: int, kind: str) -> None:
        self._seq += 1
        heapq.heappush(self._events, (when, self._seq, uid, kind))

    def _book(self, job: Job) -> None:
        self.scheduler.book(job.uid, job.start, job.end, job.nodes, job.vlans, job.subnets)

    def _release(self, job: Job) -> None:
        self.scheduler.release(job.uid, job.nodes, job.vlans, job.subnets)

    def _apply(self, job: Job, placement: Placement, request: ResourceRequest) -> None:
        job.scheduled_at = placement.start
        job.nodes = placement.nodes
        job.cores = {fqdn: self.scheduler.node_props[fqdn]["core_count"] or 1 for fqdn in placement.nodes}
        job.vlans = placement.vlans
        job.subnets = placement.subnets
        kind = "R" if job.reservation is not None else "B"
        message = f"R={sum(job.cores.values())},W={format_walltime(job.walltime)},J={kind}"
        if job.types:
            message += ",T=" + "|".join(job.types)
        job.message = message
        job.touch()

    def _schedule_events(self, job: Job) -> None:
        self._push(job.scheduled_at, job.uid, "launch")

    def _extra_filter(self, job: Job) -> Predicate | None:
        return compile_filter(job.properties) if job.properties.strip() else None

    # ------------------------------------------------------------------ submission
    def submit(self, job: Job, now: int) -> Job:
        """Place and record a new job (its uid is already set); raises OarError when OAR would refuse it."""
        try:
            request = parse_resources(job.resources)
            extra = self._extra_filter(job)
        except ValueError as exc:
            raise OarError(f"Bad resource request: {exc}") from exc
        if job.queue not in self.scheduler.queues and job.queue != "admin":
            raise OarError(f"[ADMISSION RULE] The queue {job.queue} does not exist")
        job.walltime = request.walltime or job.walltime or DEFAULT_WALLTIME
        sleep = _SLEEP.match(job.command or "")
        if sleep and int(sleep.group(1)) < job.walltime:
            job.command_seconds = int(sleep.group(1))
        try:
            if job.reservation is not None:
                start = max(job.reservation, now)
                placement = self.scheduler.place(request, job.queue, job.walltime, start, extra, exact=True)
                if placement is None:
                    later = self.scheduler.place(request, job.queue, job.walltime, start, extra)
                    assert later is not None
                    raise OarError(
                        f"Reservation not valid --> KO (This reservation could run at "
                        f"{format_paris(later.start)})"
                    )
            else:
                placement = self.scheduler.place(request, job.queue, job.walltime, now, extra)
                assert placement is not None
        except NotEnoughResources as exc:
            raise OarError(str(exc)) from exc
        self._apply(job, placement, request)
        self.jobs[job.uid] = job
        self.dirty.add(job.uid)
        self._book(job)
        self._schedule_events(job)
        return job

    def restore(self, job: Job) -> None:
        """Put back a job loaded from the state folder (its bookings and pending events)."""
        self.jobs[job.uid] = job
        if job.state in FINAL_STATES:
            return
        if job.state == "finishing":
            self._book_finishing(job)
            return  # the testbed redoes its nodes' reboot, then calls finished()
        self._book(job)
        if job.state == "waiting":
            self._push(job.scheduled_at, job.uid, "launch")
        elif job.state == "launching":
            self._push(job.started_at + self.launch_delay, job.uid, "run")
        self._push(self._end_time(job), job.uid, "end")

    # ------------------------------------------------------------------ deletion
    def delete(self, job: Job, now: int, by: str | None = None) -> list[Change]:
        """`oardel` by the job's user, or by `by` (an admin)."""
        if job.state in FINAL_STATES:
            raise OarError(f"This job was already killed (job {job.uid} is {job.state.capitalize()})")
        job.add_event(
            self.event_ids.next(),
            now,
            "FRAG_JOB_REQUEST",
            f"User {by or job.user} requested to frag the job {job.uid}",
        )
        was_running = job.state in ("launching", "running")
        if was_running:
            job.add_event(
                self.event_ids.next(), now, "SEND_KILL_JOB", f"Send the kill signal to the job {job.uid}"
            )
            job.stopped_at = now
        if job.state == "finishing":
            raise OarError(f"This job was already killed (job {job.uid} is Finishing)")
        job.message = f"job killed by {by or job.user} directly" if not was_running else job.message
        if was_running:
            self._end(job, "error", now)
        else:
            job.add_event(
                self.event_ids.next(), now, "SWITCH_INTO_ERROR_STATE", "Switch the job into the Error state"
            )
            job.state = "error"
            self._release(job)
        job.touch()
        self.dirty.add(job.uid)
        self._dirty_gantt = True
        self._compact_cursor = 0
        self.compact(now)
        return [Change("ended", job)] if was_running else []

    # ------------------------------------------------------------------ end
    def _end(self, job: Job, final: str, now: int) -> None:
        """A launched job ends: `finishing` while its nodes are rebooted, or its final state at once."""
        if self.needs_finishing(job):
            job.state, job.final_state = "finishing", final
            self._release(job)
            self._book_finishing(job)
            self._dirty_gantt = True  # waiting jobs may move up to the end of the reboots
            self._compact_cursor = 0
        else:
            self._final(job, final, now)
        job.touch()

    def _book_finishing(self, job: Job) -> None:
        """Only the nodes stay held, until the expected end of their reboot (vlans, subnets are free)."""
        stopped = max(job.stopped_at, job.start)
        for fqdn in job.nodes:  # as long as the hold fits before the next job booked on the node
            calendar = self.scheduler.nodes[fqdn]
            for end in range(stopped + FINISHING_HOLD, max(stopped, job.start + 1) - 1, -1):
                if calendar.is_free(job.start, end):
                    self.scheduler.book(job.uid, job.start, end, [fqdn], [], [])
                    break

    def _final(self, job: Job, final: str, now: int) -> None:
        if final == "error":
            job.add_event(
                self.event_ids.next(), now, "SWITCH_INTO_ERROR_STATE", "Switch the job into the Error state"
            )
        else:
            job.add_event(
                self.event_ids.next(), now, "SWITCH_INTO_TERMINATE_STATE", f"The job {job.uid} is terminated"
            )
        job.state, job.final_state = final, None
        self._release(job)
        self._dirty_gantt = True
        self._compact_cursor = 0
        for uid in sorted(self._postponed):  # jobs that waited for these nodes launch now
            self._push(now, uid, "launch")

    def finished(self, job: Job, now: int) -> None:
        """The nodes of a `finishing` job are rebooted: it takes its final state and frees them."""
        if job.state != "finishing":
            return
        self._final(job, job.final_state or "error", now)
        job.touch()
        self.dirty.add(job.uid)
        self.compact(now)

    def _nodes_finishing(self, job: Job) -> bool:
        held = {n for other in self.jobs.values() if other.state == "finishing" for n in other.nodes}
        return bool(held & set(job.nodes))

    # ------------------------------------------------------------------ time
    def _end_time(self, job: Job) -> int:
        start = job.started_at or job.scheduled_at
        if job.command_seconds is not None:
            return start + min(job.command_seconds, job.walltime)
        return start + job.walltime

    def next_event_time(self) -> int | None:
        return self._events[0][0] if self._events else None

    def advance(self, now: int) -> list[Change]:
        """Replay every event due at or before `now`, in date order."""
        changes: list[Change] = []
        deadline = time.perf_counter() + COMPACT_BUDGET  # one budget for the whole replay
        if self._dirty_gantt:
            self.compact(now, deadline)
        while self._events and self._events[0][0] <= now:
            when, _, uid, kind = heapq.heappop(self._events)
            job = self.jobs.get(uid)
            if job is None:
                continue
            self.dirty.add(uid)
            due = job.scheduled_at == when or uid in self._postponed
            if kind == "launch" and job.state == "waiting" and due:
                if self._nodes_finishing(job):
                    self._postponed.add(uid)  # launched by _final() once those nodes are free
                    continue
                self._postponed.discard(uid)
                job.scheduled_at = when
                job.state = "launching"
                job.started_at = when
                job.touch()
                self._push(when + self.launch_delay, uid, "run")
                self._push(self._end_time(job), uid, "end")
            elif kind == "run" and job.state == "launching":
                job.state = "running"
                job.touch()
                changes.append(Change("started", job))
            elif kind == "end" and job.state in ("launching", "running") and self._end_time(job) == when:
                job.stopped_at = when
                if job.command_seconds is not None and job.command_seconds < job.walltime:
                    job.exit_code = 0
                    self._end(job, "terminated", when)
                else:
                    job.add_event(
                        self.event_ids.next(),
                        when,
                        "WALLTIME",
                        f"[sarko] Job [{job.uid}] from {job.started_at} with {job.walltime}; "
                        f"current time={when} (Elapsed)",
                    )
                    self._end(job, "error", when)
                changes.append(Change("ended", job))
            if self._dirty_gantt:
                self.compact(when, deadline)
        return changes

    def compact(self, now: int, deadline: float | None = None) -> None:
        """Move waiting batch jobs earlier when resources were freed early (never later, never reservations).

        Like OAR's periodic scheduler pass, one call works for at most `COMPACT_BUDGET` seconds, in job
        order, and the next call (the next request or tick) resumes where it stopped; every booking stays
        valid meanwhile, so an unfinished pass only means some jobs start later than they could.
        """
        if deadline is None:
            deadline = time.perf_counter() + COMPACT_BUDGET
        if time.perf_counter() > deadline:
            return
        waiting = [uid for uid in sorted(self.jobs) if uid > self._compact_cursor]
        for uid in waiting:
            job = self.jobs[uid]
            if job.state != "waiting" or job.reservation is not None or job.scheduled_at <= now:
                continue
            if time.perf_counter() > deadline:
                self._compact_cursor = uid - 1
                return
            request = parse_resources(job.resources)
            self._release(job)
            try:
                placement = self.scheduler.place(
                    request, job.queue, job.walltime, now, self._extra_filter(job), before=job.scheduled_at
                )
            except NotEnoughResources:
                placement = None
            if placement is not None:
                self._apply(job, placement, request)
                self.dirty.add(uid)
                self._schedule_events(job)
            self._book(job)
        self._compact_cursor = 0
        self._dirty_gantt = False
