"""The testbed's state: reference data, one OAR per site, Kadeploy, KaVLAN, the clock, faults, persistence.

Every change happens under one lock (`Testbed.lock`), after `tick()` has replayed what the clock made
due (jobs starting and ending, deployments finishing), so a request always sees a consistent present.
A background ticker keeps time moving when nobody asks, so the node backend hears about job ends
(vlans back to DEFAULT, subnets released) even on an idle server.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from g5k_testbed.auth import AuthConfig
from g5k_testbed.backend import NodeBackend, load_backend
from g5k_testbed.clock import Clock
from g5k_testbed.faults import FaultConfig, FaultInjector
from g5k_testbed.jobs import Job
from g5k_testbed.kadeploy import Deployment, environment_catalogue, resolve_environment
from g5k_testbed.kavlan import DEFAULT, Kavlan
from g5k_testbed.oar import Change, IdCounter, OarSite
from g5k_testbed.oar_properties import node_properties
from g5k_testbed.oar_scheduler import SiteScheduler
from g5k_testbed.reference import Reference
from g5k_testbed.store import StateStore
from g5k_testbed.subnets import site_slash22s

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error reply: a status code and g5k-api's plain-text message."""

    def __init__(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = headers or {}


@dataclass
class TestbedConfig:
    sites: list[str] | None = None  # None = all sites of the reference data
    state_dir: str | None = None
    auth: AuthConfig = field(default_factory=AuthConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    admin: bool = False  # serve /_testbed/ (clock and faults control)
    launch_delay: int = 1  # seconds between a job's `launching` and `running`
    kadeploy_duration: int = 5  # testbed seconds a deployment takes at least
    frozen_clock: float | None = None  # start with the clock frozen at this epoch (tests)
    tick_interval: float = 0.5  # seconds between background ticks (0 = no ticker)
    first_job_id: int = 1000


class Testbed:
    def __init__(
        self, config: TestbedConfig, backend: NodeBackend | None = None, reference: Reference | None = None
    ) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.reference = reference or Reference.load(config.sites)
        self.store = StateStore(config.state_dir)
        meta = self.store.load("meta") or {}
        clock_meta = meta.get("clock", {})
        if config.frozen_clock is not None:
            self.clock = Clock(frozen_at=config.frozen_clock)
        elif clock_meta.get("frozen"):
            self.clock = Clock(offset=0.0)
            self.clock.advance(max(0.0, float(clock_meta.get("offset", 0.0))))
            self.clock.freeze()
        else:
            self.clock = Clock(offset=max(0.0, float(clock_meta.get("offset", 0.0))))
        self.backend = backend if backend is not None else load_backend(config.state_dir)
        self.faults = FaultInjector(config.faults)  # faults are what this start asks for, never inherited
        self.materialised = self.backend.materialised_nodes()
        self.kavlan = Kavlan(self.reference)
        self.environments = environment_catalogue(self.reference.environments)
        self.job_ids = IdCounter(max(int(meta.get("last_job_id", 0)), config.first_job_id - 1))
        self.event_ids = IdCounter(int(meta.get("last_event_id", 0)))
        self.oar: dict[str, OarSite] = {}
        for uid, site in self.reference.sites.items():
            props = {
                fqdn: node_properties(info.doc, uid, info.cluster, fqdn)
                for fqdn, info in site.node_info.items()
            }
            queues = {fqdn: info.queues for fqdn, info in site.node_info.items()}
            scheduler = SiteScheduler(
                props,
                queues,
                self.kavlan.site_vlans[uid],
                site_slash22s(site.doc["virt_ip_range"]) if site.doc.get("virt_ip_range") else [],
                usable=self.node_usable,
            )
            self.oar[uid] = OarSite(uid, scheduler, self.job_ids, self.event_ids, config.launch_delay,
                                    needs_finishing=self._needs_finishing)
        self.deployments: dict[str, dict[str, Deployment]] = {uid: {} for uid in self.reference.sites}
        self.files: dict[str, str] = {}
        self._saved_jobs: dict[int, int] = {}
        self._running_subnets: dict[str, list[str]] = {}
        self._executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="kadeploy")
        # job ends reboot nodes in their own workers, so that they never wait behind deployments
        self._epilogue = ThreadPoolExecutor(max_workers=16, thread_name_prefix="oar-epilogue")
        self._rebooting: dict[int, set[str]] = {}  # finishing job -> its nodes still being rebooted
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._load_state()
        with self.lock:
            self.tick()
        if config.tick_interval > 0:
            self._ticker = threading.Thread(target=self._tick_loop, name="testbed-ticker", daemon=True)
            self._ticker.start()

    # ------------------------------------------------------------------ nodes
    def node_hard_state(self, fqdn: str) -> str:
        if fqdn in self.faults.config.dead_nodes:
            return "dead"
        if self.materialised is not None and fqdn not in self.materialised:
            return "absent"
        return "alive"

    def node_usable(self, fqdn: str) -> bool:
        return self.node_hard_state(fqdn) == "alive"

    # ------------------------------------------------------------------ time
    def now(self) -> int:
        return self.clock.seconds()

    def tick(self) -> None:
        """Replay everything due (caller holds the lock)."""
        now = self.now()
        for site, oar in self.oar.items():
            changes = oar.advance(now)
            if changes:
                self.apply_changes(site, changes)
        self._finish_deployments(now)
        self.flush_jobs()

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.config.tick_interval):
            try:
                with self.lock:
                    self.tick()
            except Exception:  # keep time moving whatever one tick hit; the next request will show it
                log.exception("testbed tick failed")

    def _needs_finishing(self, job: Job) -> bool:
        return any(self._reboot_wanted(fqdn, job) for fqdn in job.nodes)

    def _reboot_wanted(self, fqdn: str, job: Job) -> bool:
        try:
            return bool(self.backend.needs_reboot(fqdn, job.deploy))
        except Exception:
            log.exception("backend.needs_reboot(%s) failed", fqdn)
            return False

    def _start_reboots(self, site: str, job: Job) -> None:
        """The epilogue of a `finishing` job: its nodes rebooted outside the lock, then its final state."""
        if job.uid in self._rebooting:
            return
        nodes = [fqdn for fqdn in job.nodes if self._reboot_wanted(fqdn, job)]
        self._rebooting[job.uid] = set(nodes)
        if not nodes:
            self.oar[site].finished(job, self.now())
            return
        for fqdn in nodes:
            self._epilogue.submit(self._reboot_one, site, job, fqdn)

    def _reboot_one(self, site: str, job: Job, fqdn: str) -> None:
        try:
            if not self.backend.reboot_node(fqdn, job.deploy):
                log.error("reboot of %s at the end of job %s failed", fqdn, job.uid)
        except Exception:
            log.exception("backend.reboot_node(%s) failed", fqdn)
        with self.lock:
            left = self._rebooting.get(job.uid, set())
            left.discard(fqdn)
            if not left:
                self._rebooting.pop(job.uid, None)
                self.oar[site].finished(job, self.now())
                self.flush_jobs()

    def apply_changes(self, site: str, changes: list[Change]) -> None:
        """React to jobs that started or ended: vlans back to DEFAULT, subnets for the lab's DHCP, nodes of
        a `finishing` job rebooted."""
        for change in changes:
            job = change.job
            if change.kind == "started":
                for fqdn in job.nodes:
                    try:
                        self.backend.job_started(fqdn, job.user, job.deploy)
                    except Exception:
                        log.exception("backend.job_started(%s) failed", fqdn)
                continue
            if change.kind != "ended":
                continue
            for vid in job.vlans:
                for other in self.reference.sites:
                    for address in self.kavlan.nodes_in(other, vid):
                        self.move(address, DEFAULT)
            for fqdn in job.nodes:
                info = self.reference.nodes_by_fqdn.get(fqdn)
                for address in info.addresses if info else (fqdn,):
                    if self.kavlan.vlan_of(address) != DEFAULT:
                        self.move(address, DEFAULT)
            if job.state == "finishing":
                self._start_reboots(site, job)
        self._update_subnets(site)

    def _update_subnets(self, site: str) -> None:
        held = sorted(
            {cidr for job in self.oar[site].jobs.values() if job.state == "running" for cidr in job.subnets}
        )
        if held != self._running_subnets.get(site, []):
            self._running_subnets[site] = held
            try:
                self.backend.subnets_changed(site, held)
            except Exception:
                log.exception("backend.subnets_changed failed for %s", site)

    def move(self, address: str, vid: str) -> bool:
        """Plug an interface into a vlan (state, persistence and backend); False if already there."""
        if not self.kavlan.set(address, vid):
            return False
        self.store.save("", "kavlan", self.kavlan.to_dict())
        try:
            self.backend.move_to_vlan(address, vid)
        except Exception:
            log.exception("backend.move_to_vlan(%s, %s) failed", address, vid)
        return True

    # ------------------------------------------------------------------ jobs
    def new_job_id(self) -> int:
        return self.job_ids.next()

    def find_job(self, site: str, uid: int) -> Job | None:
        return self.oar[site].jobs.get(uid)

    def running_jobs_of(self, site: str, user: str) -> list[Job]:
        return [job for job in self.oar[site].jobs.values() if job.user == user and job.state == "running"]

    def vlan_holder(self, site: str, vid: str) -> Job | None:
        """The running job that holds vlan `vid` (looked up on the site that owns it)."""
        owner = self.kavlan.owner_site(site, vid)
        oar = self.oar.get(owner)
        if oar is None or vid not in oar.scheduler.vlans:
            return None
        for uid in oar.scheduler.vlans[vid].owners_at(self.now()):
            job = oar.jobs.get(uid)
            if job is not None and job.state == "running":
                return job
        return None

    def flush_jobs(self) -> None:
        """Write every job whose record changed since it was last saved."""
        if not self.store.enabled:
            return
        changed = False
        for oar in self.oar.values():
            for uid in oar.dirty:
                job = oar.jobs.get(uid)
                if job is not None and self._saved_jobs.get(uid) != job.version:
                    self.store.save("jobs", str(uid), job.to_dict())
                    self._saved_jobs[uid] = job.version
                    changed = True
            oar.dirty.clear()
        if changed:
            self.save_meta()

    def save_meta(self) -> None:
        self.store.save(
            "",
            "meta",
            {
                "clock": self.clock.to_dict(),
                "last_job_id": self.job_ids.value,
                "last_event_id": self.event_ids.value,
                "faults": self.faults.config.to_dict(),
            },
        )

    # ------------------------------------------------------------------ deployments
    def start_deployment(self, deployment: Deployment, key_content: str | None) -> None:
        self.deployments[deployment.site_uid][deployment.uid] = deployment
        self.save_deployment(deployment)
        for fqdn in deployment.nodes:
            if fqdn not in deployment.ko_nodes:
                self._executor.submit(self._deploy_one, deployment, fqdn, key_content)

    def _deploy_one(self, deployment: Deployment, fqdn: str, key_content: str | None) -> None:
        try:
            ok = bool(self.backend.deploy_node(fqdn, deployment.environment, key_content,
                                               release=self.release_line(deployment)))
        except Exception:
            log.exception("backend.deploy_node(%s) failed", fqdn)
            ok = False
        with self.lock:
            if deployment.status == "processing":
                deployment.node_results[fqdn] = ok
                self.save_deployment(deployment)

    def _finish_deployments(self, now: int) -> None:
        for deployments in self.deployments.values():
            for dep in deployments.values():
                if dep.status != "processing" or now < dep.finish_after:
                    continue
                if len(dep.node_results) + len(dep.ko_nodes) < len(dep.nodes):
                    continue
                result = {}
                for fqdn in dep.nodes:
                    ok = fqdn not in dep.ko_nodes and dep.node_results.get(fqdn, False)
                    result[fqdn] = (
                        {"macro": None, "micro": None, "state": "OK"}
                        if ok
                        else {
                            "macro": "SetDeploymentEnv",
                            "micro": "SetDeploymentEnvUntrusted",
                            "state": "KO",
                        }
                    )
                dep.result = result
                dep.status = "terminated"
                dep.updated_at = max(now, dep.finish_after)
                if dep.vlan is not None:
                    for fqdn, res in result.items():
                        if res["state"] == "OK":
                            self.move(fqdn, str(dep.vlan))
                self.save_deployment(dep)

    def release_line(self, deployment: Deployment) -> str | None:
        """`/etc/grid5000/release` of a deployed environment: `<alias or name>-<version>`, as Grid'5000's
        images have (e.g. `debian12-x64-min-2025010712`); None for an environment given by URL."""
        spec = deployment.environment.split("@")[0]
        env = resolve_environment(self.environments, spec, deployment.arch)
        if env is None:
            return None
        return f"{env.get('alias') or env['name']}-{env['version']}"

    def save_deployment(self, deployment: Deployment) -> None:
        self.store.save("deployments", deployment.uid, deployment.to_dict())

    # ------------------------------------------------------------------ persistence
    def _load_state(self) -> None:
        if not self.store.enabled:
            return
        kavlan = self.store.load("kavlan")
        if kavlan:
            self.kavlan.load(kavlan)
        jobs = [Job.from_dict(data) for data in self.store.load_all("jobs")]
        for job in sorted(jobs, key=lambda j: j.uid):
            if job.site in self.oar:
                self.oar[job.site].restore(job)
                self._saved_jobs[job.uid] = job.version
                self.job_ids.value = max(self.job_ids.value, job.uid)
        for data in self.store.load_all("deployments"):
            dep = Deployment.from_dict(data)
            if dep.site_uid in self.deployments:
                self.deployments[dep.site_uid][dep.uid] = dep
                if dep.status == "processing":  # its workers died with the old server: redo them
                    key = self.store.read_file(dep.key) if dep.key else None
                    for fqdn in dep.nodes:
                        if fqdn not in dep.ko_nodes and fqdn not in dep.node_results:
                            self._executor.submit(self._deploy_one, dep, fqdn, key)
        for site, oar in self.oar.items():
            for job in list(oar.jobs.values()):
                if job.state == "finishing":  # its reboots died with the old server: redo them
                    self._start_reboots(site, job)
            self._update_subnets(site)

    # ------------------------------------------------------------------ lifecycle
    def describe(self) -> dict[str, Any]:
        return {"sites": list(self.reference.sites), "now": self.clock.now(), "clock": self.clock.to_dict()}

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._epilogue.shutdown(wait=False, cancel_futures=True)
        with self.lock:
            self.flush_jobs()
            self.save_meta()
        try:
            self.backend.close()
        except Exception:
            log.exception("backend.close failed")
