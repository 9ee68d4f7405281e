"""The Grid'5000 platform: the steps of ``vm5k.platforms`` on a Grid'5000 REST API (real or testbed).

Each step copies the topology, does its work, records it in ``meta`` (see ``record.py``) and returns the
copy; each is re-entrant (a resumed run calls it again and it skips what is recorded as done).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from vm5k import render
from vm5k.addresses import (
    POOL_KEY,
    SERVICE_KEY,
    AddressPool,
    AddressRange,
    assign,
    kavlan_range,
    subnet_range,
    with_service_address,
)
from vm5k.errors import DeploymentError, PlatformError, UsageError
from vm5k.placement import NotEnoughCapacity, evacuate, place_unplaced
from vm5k.platforms import ProgressCallback, ProgressItem, ProgressReport
from vm5k.platforms.grid5000.api import ApiClient, ApiError
from vm5k.platforms.grid5000.credentials import ApiConfig, load_api_config
from vm5k.platforms.grid5000.deployed import DeploymentMarker, job_keys
from vm5k.platforms.grid5000.hosts import (
    JOB,
    apply_jobs,
    apply_plan,
    demand_for,
    named_hosts,
    node_of,
    substitute_hosts,
)
from vm5k.platforms.grid5000.kadeploy import (
    FINAL,
    DeploymentRecord,
    environment,
    submit_deployment,
    wait_deployments,
)
from vm5k.platforms.grid5000.oar import (
    ACTIVE_STATES,
    LIVE_STATES,
    JobRecord,
    ReservationRefused,
    delete_job,
    find_jobs,
    get_job,
    job_resources,
    job_start,
    paris_date,
    wait_gone,
)
from vm5k.platforms.grid5000.planning import (
    SECURITY_MARGIN,
    Demand,
    Inventory,
    Plan,
    plan_slot,
    select,
    with_not_before,
)
from vm5k.platforms.grid5000.planning.remap import substitutes
from vm5k.platforms.grid5000.record import (
    Grid5000Record,
    Options,
    job_name,
    run_id,
)
from vm5k.platforms.grid5000.reference import Reference, list_sites, reference_from_docs
from vm5k.platforms.grid5000.reservation import Submission, reservation_start, site_types, submit_plan
from vm5k.platforms.grid5000.reservation import wait_running as wait_jobs
from vm5k.platforms.grid5000.status import fetch_availability
from vm5k.remote import SshRunner, SshSettings
from vm5k.request import GRID5000, Element, Request, format_walltime
from vm5k.runstate import RUN_ID_KEY
from vm5k.timeline import DEPLOY_STARTED, DEPLOYED, stamp
from vm5k.topology import HOST_KO, HOST_OK, Host, Topology

log = logging.getLogger(__name__)

STALE_PLAN = 600  # seconds after which reserve() plans again instead of trusting the recorded plan
MAX_REFUSALS = 5  # "could run at" answers followed before giving up
MAX_DEPLOYS = 2  # Kadeploy tries per node: a KO node is retried once, then excluded


class Grid5000Platform:
    """Hosts from a Grid'5000 REST API (see ``vm5k.platforms`` for the steps).

    api: an `ApiClient`, an `ApiConfig`, an API URL (``--api``), or None (``VM5K_API`` or
        ``~/.python-grid5000.yaml``; see ``credentials.py``).
    ssh: the run's SSH settings (ssh_config, keys, known_hosts); used to tell deployed hosts. Without it
        (and without `marker`), every host is deployed unless ``--nodeploy``.
    public_key: the run's public key, installed by Kadeploy for root.
    progress: called with a `ProgressReport` while waiting (jobs, deployments).
    checkpoint: called with the topology after each change worth saving inside a step (jobs submitted,
        deployments started, hosts KO), so that an interruption leaves a true record.
    poll / sleep: waiting between API polls (tests pass a `sleep` that moves the testbed's clock).
    """

    def __init__(self, api: ApiClient | ApiConfig | str | None = None, *, name: str = "grid5000",
                 ssh: SshSettings | None = None, public_key: str | None = None,
                 progress: ProgressCallback | None = None,
                 checkpoint: Callable[[Topology], object] | None = None,
                 marker: DeploymentMarker | None = None, poll: float = 10.0,
                 sleep: Callable[[float], None] = time.sleep, margin: int = SECURITY_MARGIN) -> None:
        if isinstance(api, ApiClient):
            self.api = api
        else:
            self.api = ApiClient(api if isinstance(api, ApiConfig) else load_api_config(api))
        self.name = name
        self.ssh = ssh
        self.public_key = public_key
        self.progress = progress
        self.checkpoint = checkpoint
        self.marker = marker if marker is not None else (
            DeploymentMarker(lambda: SshRunner(ssh)) if ssh is not None else None)
        self.poll = poll
        self.sleep = sleep
        self.margin = margin
        self.login = self.api.config.username
        self._docs: dict[str, Any] = {}
        self._sites: list[str] | None = None
        self._cluster_sites: dict[str, str] | None = None
        self._last_report: object = None

    # -- reference data ------------------------------------------------------------------------------

    def site_names(self) -> list[str]:
        if self._sites is None:
            self._sites = list_sites(self.api)
        return self._sites

    def reference(self, sites: Iterable[str]) -> Reference:
        """The reference of `sites` (fetched once per site per platform object)."""
        missing = [site for site in dict.fromkeys(sites) if site not in self._docs]
        if missing:
            with ThreadPoolExecutor(max_workers=min(8, len(missing))) as pool:
                docs = list(pool.map(lambda site: self.api.get(f"/sites/{site}", deep="true"), missing))
            for site, doc in zip(missing, docs, strict=True):
                items = doc.get("items") if isinstance(doc, dict) else None
                self._docs[site] = items if isinstance(items, dict) else doc
        return reference_from_docs(self._docs)

    def _cluster_map(self) -> dict[str, str]:
        if self._cluster_sites is None:
            sites = self.site_names()
            with ThreadPoolExecutor(max_workers=min(8, max(1, len(sites)))) as pool:
                lists = list(pool.map(lambda s: self.api.get(f"/sites/{s}/clusters", queues="all"), sites))
            self._cluster_sites = {str(c["uid"]): site for site, reply in zip(sites, lists, strict=True)
                                   for c in reply.get("items", [])}
        return self._cluster_sites

    def sites_of(self, names: Iterable[str]) -> list[str]:
        """The sites that ``-r``/``-b``/host names live on (all sites for ``grid5000``)."""
        names = list(names)
        if GRID5000 in names:
            return list(self.site_names())
        out: list[str] = []
        for name in names:
            out.append(self._site_of(name, strict=True) or "")
        return list(dict.fromkeys(site for site in out if site))

    def _site_of(self, name: str, *, strict: bool) -> str | None:
        sites = self.site_names()
        if name in sites:
            return name
        labels = name.split(".")
        if len(labels) >= 2 and labels[1] in sites:
            return labels[1]
        cluster = re.sub(r"-\d+$", "", labels[0])
        site = self._cluster_map().get(labels[0]) or self._cluster_map().get(cluster)
        if site is None and strict:
            raise UsageError(f"unknown Grid'5000 element {name!r}: not a site, cluster or host of "
                             f"{self.api.uri}")
        return site

    # -- helpers ---------------------------------------------------------------------------------------

    def _report(self, progress: ProgressReport) -> None:
        """Hand a report to the callback; log it when something changed (a state or a start, not the
        time left, so that hours of waiting do not fill the log)."""
        key = (progress.step, tuple((i.name, i.state, i.start) for i in progress.items) or progress.message)
        if key != self._last_report:
            log.info("%s", progress.message)
            self._last_report = key
        if self.progress is not None:
            self.progress(progress)

    def _save(self, topology: Topology, record: Grid5000Record) -> Topology:
        record.api = self.api.uri
        record.save(topology)
        if self.checkpoint is not None:
            self.checkpoint(topology)
        return topology

    # -- plan ------------------------------------------------------------------------------------------

    def plan(self, topology: Topology, request: Request | None = None) -> Topology:
        """Choose the start time and the hosts; VMs placed on the predicted hosts. Submits nothing."""
        topo = topology.copy()
        record = Grid5000Record.load(topo)
        if request is not None:
            env = environment(request.env_name, request.env_file, login=self.login)
            record.options = Options.from_request(request, env)
        run_id(topo)
        if record.jobs:
            log.info("already reserved (%s): nothing to plan", ", ".join(j.label for j in record.jobs))
            return self._save(topo, record)
        topo = self._take_jobs(topo, record) if record.options.jobs else self._plan_into(topo, record, None)
        return self._save(topo, record)

    def _plan_into(self, topo: Topology, record: Grid5000Record, not_before: int | None) -> Topology:
        options = record.options
        names = [e.name for e in options.resources] + [node_of(h) for h in named_hosts(topo)]
        if named_hosts(topo):
            names = [node_of(h) for h in named_hosts(topo)]
        sites = self.sites_of(names)
        self._check_blacklist(options.blacklist)
        ref = self.reference(sites)
        inventory = ref.inventory
        blacklist = tuple(b for b in options.blacklist if self._known(inventory, b))
        if options.walltime is None:
            raise UsageError("no walltime: give -w")
        def make_demand() -> Demand:
            demand = demand_for(topo, tuple(options.resources), inventory, blacklist=blacklist,
                                walltime=options.walltime, placement=options.placement,
                                kavlan=options.kavlan, queue=options.queue)
            return demand if not_before is None else with_not_before(demand, not_before)

        demand = make_demand()
        planned_sites = [s for s in sites if inventory.sites.get(s)]
        optional = planned_sites if GRID5000 in names else ()
        availability = fetch_availability(self.api, planned_sites, margin=self.margin, optional=optional)
        remaps = substitutes(inventory, availability, demand)
        if remaps:
            for remap in remaps:
                log.warning("host %s is %s in OAR: its %d VMs go to %s (same cluster) instead", remap.host,
                            remap.state, remap.vms, remap.substitute)
            substitute_hosts(topo, inventory, remaps)
            demand = make_demand()
        plan = plan_slot(inventory, availability, demand)
        self._check_capacity(plan, demand)
        record.plan = plan
        topo = apply_plan(topo, plan, inventory)
        for warning in place_unplaced(topo, options.placement):
            log.warning("%s", warning)
        log.info("planned: start %s Europe/Paris on %s", paris_date(plan.start),
                 ", ".join(f"{site} ({part.node_count} node{'s' * (part.node_count != 1)})"
                           for site, part in plan.sites.items()))
        return topo

    def _check_blacklist(self, names: Iterable[str]) -> None:
        """A ``-b`` name that is no site, cluster or host of Grid'5000 is a typo: say so, never ignore it."""
        for name in names:
            if self._site_of(name, strict=False) is None:
                raise UsageError(f"-b: unknown Grid'5000 element {name!r}: not a site, cluster or host of "
                                 f"{self.api.uri}")

    @staticmethod
    def _known(inventory: Inventory, name: str) -> bool:
        try:
            inventory.resolve(name)
        except UsageError:
            return False
        return True

    @staticmethod
    def _check_capacity(plan: Plan, demand: Demand) -> None:
        """What is reserved is what placement can fill: place on the hosts at their counted capacity."""
        hosts = plan.planned_hosts()
        for host in hosts:
            host.vms = list(demand.assigned.get(host.id, ()))
        if demand.vms:
            demand.placement.place(demand.vms, hosts)

    def _take_jobs(self, topo: Topology, record: Grid5000Record) -> Topology:
        """``-j``: the given jobs' hosts (predicted ones while a job waits), subnets and vlan."""
        refs = record.options.jobs
        found: list[tuple[str, dict[str, Any]]] = []
        for ref in refs:
            site, doc = self._find_job(ref.site, ref.id)
            state = str(doc.get("state", "")).lower()
            if state not in LIVE_STATES:
                raise UsageError(f"job {site}:{ref.id} is {state or 'unknown'}: it cannot be used")
            found.append((site, doc))
        records = [JobRecord(site, int(doc["uid"]), True, str(doc.get("state")), job_start(doc))
                   for site, doc in found]
        nodes = {f"{site}:{doc['uid']}": job_resources(doc).nodes for site, doc in found}
        self._check_job_network(record, found)
        reference = self.reference([site for site, _ in found])
        topo = apply_jobs(topo, nodes, reference.inventory, None)
        for warning in place_unplaced(topo, record.options.placement):
            log.warning("%s", warning)
        record.jobs = records
        return topo

    def _find_job(self, site: str | None, job_id: int) -> tuple[str, dict[str, Any]]:
        if site is not None:
            if site not in self.site_names():
                raise UsageError(f"-j: unknown site {site!r}")
            try:
                return site, get_job(self.api, site, job_id)
            except ApiError as error:
                if error.status == 404:
                    raise UsageError(f"-j: there is no job {job_id} on {site}") from None
                raise

        def probe(name: str) -> dict[str, Any] | None:
            try:
                return get_job(self.api, name, job_id)
            except ApiError as error:
                if error.status == 404:
                    return None
                raise

        sites = self.site_names()
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(sites)))) as pool:
            docs = list(pool.map(probe, sites))
        hits = [(name, doc) for name, doc in zip(sites, docs, strict=True) if doc is not None]
        if not hits:
            raise UsageError(f"-j: no site holds a job {job_id}")
        if len(hits) > 1:
            where = ", ".join(name for name, _ in hits)
            raise UsageError(f"-j: job {job_id} exists on {where}: give site:{job_id}")
        return hits[0]

    @staticmethod
    def _check_job_network(record: Grid5000Record, found: Sequence[tuple[str, dict[str, Any]]]) -> None:
        held = [job_resources(doc) for _, doc in found]
        if record.options.kavlan:
            if not any(r.vlans for r in held):
                raise UsageError("-k: none of the -j jobs holds a vlan ({type='kavlan'}/vlan=1)")
            return
        subnet_sites = {site for (site, _), r in zip(found, held, strict=True) if r.subnets}
        for (site, doc), resources in zip(found, held, strict=True):
            if resources.nodes and site not in subnet_sites:
                raise UsageError(f"job {site}:{doc['uid']} holds no subnet: the VMs need addresses "
                                 "(reserve with slash_22=1, or use -k with a vlan)")

    def plan_text(self, topology: Topology) -> str:
        """The dry run's report: start, the exact OAR requests (one plain line each), the placement."""
        record = Grid5000Record.load(topology)
        lines: list[str] = []
        name = f"vm5k-{topology.meta.get(RUN_ID_KEY, '<run id>')}"
        walltime = None
        if record.jobs:
            lines.append("Using existing jobs:")
            for job in record.jobs:
                start = f", start {paris_date(job.start)} Europe/Paris" if job.start else ""
                lines.append(f"  {job.label} ({job.state}{start})")
        elif record.plan is not None:
            plan = record.plan
            walltime = format_walltime(plan.walltime)
            reserved = reservation_start(plan, plan.now)
            when = "now" if reserved is None else f"in {format_walltime(plan.start - plan.now)}"
            lines.append(f"Planned on the API server's clock ({self.api.uri}): "
                         f"now {paris_date(plan.now)} Europe/Paris")
            lines.append(f"Start: {paris_date(plan.start)} Europe/Paris ({when}), walltime {walltime}, "
                         f"end {paris_date(plan.end)}")
            for site, site_plan in plan.sites.items():
                date = f", reservation {paris_date(plan.start)}" if reserved is not None else ""
                lines.append(f"OAR job on {site} (types {','.join(site_types(site_plan.exotic))}, "
                             f"name {name}{date}):")
                lines.append(site_plan.resources(plan.walltime))
        return "\n".join(lines) + "\n" + render.plan_text(topology, walltime=walltime)

    def hardware(self, request: Request) -> list[Host]:
        """The hosts ``vm5k_max_vms`` counts for: those of ``-j`` jobs, else every node that ``-r`` could
        use (reference hardware, with ``-b``, the queue and the VM rules of planning). Each of these lists
        in ``extra["counted"]`` the counted ``-r`` elements (``site:N``) that may draw it, as the planner
        resolves them."""
        if request.jobs:
            found = [self._find_job(ref.site, ref.id) for ref in request.jobs]
            ref = self.reference([site for site, _ in found])
            fqdns = [fqdn for _, doc in found for fqdn in job_resources(doc).nodes]
            return [Host(f, ref.inventory.nodes[f].capacity) for f in fqdns if f in ref.inventory.nodes]
        names = [element.name for element in request.resources]
        self._check_blacklist(request.blacklist)
        inventory = self.reference(self.sites_of(names)).inventory
        blacklist = tuple(b for b in request.blacklist if self._known(inventory, b))
        demand = Demand(elements=tuple(Element(n) for n in names), blacklist=blacklist, queue=request.queue)
        selection = select(inventory, demand)
        counted: dict[str, list[str]] = {}  # cluster -> the counted elements drawing from it
        for want in select(inventory, replace(demand, elements=request.resources)).wants:
            for cluster in want.clusters if want.kind != "host" else ():
                counted.setdefault(cluster, []).append(f"{want.name}:{want.count}")
        return [Host(node.fqdn, node.capacity, extra={"counted": tuple(counted.get(cluster, ()))})
                for cluster in selection.pool for node in selection.eligible[cluster]]

    # -- reserve ---------------------------------------------------------------------------------------

    def reserve(self, topology: Topology) -> Topology:
        """Submit the plan (one job per site, all or nothing); ``-j`` jobs are taken as they are."""
        topo = topology.copy()
        record = Grid5000Record.load(topo)
        if record.jobs:
            log.info("reservation already made: %s", ", ".join(j.label for j in record.jobs))
            return self._save(topo, record)
        if record.plan is None:
            topo = self.plan(topo)
            record = Grid5000Record.load(topo)
            if record.jobs:
                return self._save(topo, record)
        name = job_name(topo)
        self._kill_orphans(record.sites, name)
        assert record.plan is not None
        if self.api.server_now() - record.plan.now > STALE_PLAN:
            log.info("the plan is old: planning again")
            topo = self._plan_into(topo, record, None)
        for attempt in range(1, MAX_REFUSALS + 1):
            try:
                how = Submission(name, record.options.queue, self.login)
                record.jobs = submit_plan(self.api, record.plan, how)
                break
            except ReservationRefused as refused:
                if attempt == MAX_REFUSALS:
                    raise
                not_before = refused.could_run_at or self.api.server_now()
                log.info("%s: planning again from %s", refused, paris_date(not_before))
                topo = self._plan_into(topo, record, not_before)
        return self._save(topo, record)

    def _kill_orphans(self, sites: Iterable[str], name: str) -> None:
        """Jobs of this run that no record knows of (an interrupted earlier attempt): never reused."""
        for site in sites:
            for job in find_jobs(self.api, site, name, self.login):
                log.warning("killing job %s:%s of this run, which was not recorded", site, job["uid"])
                delete_job(self.api, site, int(job["uid"]))

    # -- wait_running ------------------------------------------------------------------------------------

    def wait_running(self, topology: Topology, *, timeout: float | None = None) -> Topology:
        """Wait until every job runs, reporting state, scheduled start and time left."""
        topo = topology.copy()
        record = Grid5000Record.load(topo)
        if not record.jobs:
            raise PlatformError("nothing is reserved yet: reserve first")
        try:
            wait_jobs(self.api, record.jobs, report=self._report, poll=self.poll, sleep=self.sleep,
                      timeout=timeout)
        finally:
            self._save(topo, record)
        return topo

    # -- resources -------------------------------------------------------------------------------------

    def resources(self, topology: Topology) -> Topology:
        """The jobs' hosts with their hardware, the VMs placed on them, the address pool and pairs."""
        topo = topology.copy()
        record = Grid5000Record.load(topo)
        if not record.jobs:
            raise PlatformError("nothing is reserved yet: reserve first")
        docs = [get_job(self.api, job.site, job.id) for job in record.jobs]
        for job, doc in zip(record.jobs, docs, strict=True):
            job.state = str(doc.get("state", "")).lower()
            if job.state != "running":
                raise PlatformError(f"job {job.label} is {job.state}, not running: wait for it first")
        held = {job.label: job_resources(doc) for job, doc in zip(record.jobs, docs, strict=True)}
        vlan_owner = next(((job.site, r.vlans[0]) for job in record.jobs
                           for r in [held[job.label]] if r.vlans), None)
        vlan = vlan_owner[1] if vlan_owner and record.options.kavlan else None
        if record.options.kavlan and vlan is None:
            raise PlatformError("-k: the jobs hold no vlan")
        sites = list(dict.fromkeys(job.site for job in record.jobs))
        ref = self.reference(sites)
        topo = apply_jobs(topo, {label: r.nodes for label, r in held.items()}, ref.inventory, vlan)
        for warning in place_unplaced(topo, record.options.placement):
            log.warning("%s", warning)
        pool = self._pool(topo, record, held, ref, vlan_owner if vlan else None)
        pool, service = with_service_address(pool, topo.meta.get(SERVICE_KEY))
        topo.meta[POOL_KEY] = pool.to_dict()
        topo.meta[SERVICE_KEY] = service
        assign(topo, pool)
        record.vlan = vlan
        ranges = "; ".join(f"{','.join(r.sites)}: {', '.join(r.blocks[:3])}{' ...' * (len(r.blocks) > 3)}"
                           for r in pool.ranges)
        log.info("%d hosts from %s; %d VMs placed, addresses from %s", len(topo.hosts()),
                 ", ".join(j.label for j in record.jobs), len(topo.vms()) - len(topo.unplaced), ranges)
        return self._save(topo, record)

    def _pool(self, topo: Topology, record: Grid5000Record, held: dict[str, Any], ref: Reference,
              vlan_owner: tuple[str, str] | None) -> AddressPool:
        host_sites = [site.id for site in topo.sites if site.clusters and any(c.hosts for c in site.clusters)]
        if vlan_owner is not None:
            owner, vlan = vlan_owner
            ips = [ip for network in ref.networks.values() for ip in network.node_ips.get(vlan, ())]
            return AddressPool((kavlan_range(vlan, ref.networks[owner], host_sites, ips),))
        ranges: list[AddressRange] = []
        for site in host_sites:
            cidrs = [c for job in record.jobs if job.site == site for c in held[job.label].subnets]
            if not cidrs:
                raise PlatformError(f"the jobs of {site} hold no subnet: its VMs have no addresses")
            network = ref.networks[site]
            ranges.append(subnet_range(site, cidrs, network.virt_ip_range, network.subnet_gateway))
        return AddressPool(tuple(ranges))

    # -- deploy_hosts ------------------------------------------------------------------------------------

    def deploy_hosts(self, topology: Topology) -> Topology:
        """Kadeploy the hosts that are not deployed yet; KO ones retried once, then excluded."""
        topo = topology.copy()
        record = Grid5000Record.load(topo)
        options = record.options
        hosts = [h for h in topo.hosts() if h.state != HOST_KO]
        if options.nodeploy:
            for host in hosts:
                host.state = HOST_OK
            log.info("--nodeploy: %d hosts taken as deployed", len(hosts))
            return self._save(topo, record)
        done = set(record.deployed)
        by_node = {node_of(h): h for h in hosts}
        failed: dict[str, str] = {}
        tries: dict[str, int] = {}
        for deployment in record.deployments:
            for node in deployment.nodes:
                tries[node] = tries.get(node, 0) + 1
        run_jobs = self._run_jobs(topo, record)
        pending = [d for d in record.deployments if d.status not in FINAL]
        if pending:
            log.info("waiting for the deployments started before: %s", ", ".join(d.uid for d in pending))
            self._stamp_ends(pending, by_node, self._wait_deployments(pending))
            self._absorb(pending, by_node, done, failed, options.environment.name, run_jobs)
        fresh = [h for h in hosts if h.id not in done and not tries.get(node_of(h))]
        if fresh and record.vlan and not options.forcedeploy and self.marker is not None:
            # only nodes already in the run's vlan can have been deployed for it (and answer to its names)
            inside = self._in_vlan(topo, fresh, record.vlan)
            fresh = [h for h in fresh if node_of(h) in inside]
        if fresh and not options.forcedeploy and self.marker is not None:
            # deployed for THIS reservation only: a marker left by an earlier job proves nothing now
            already = self.marker.deployed([h.id for h in fresh], options.environment.name, run_jobs)
            if already:
                log.info("%d hosts are already deployed with %s: not deploying them again", len(already),
                         options.environment.name)
            done |= already
        while True:  # a KO node is deployed twice at most
            batch = [h for h in hosts if h.id not in done and tries.get(node_of(h), 0) < MAX_DEPLOYS]
            if not batch:
                break
            if not self.public_key:
                raise UsageError("deploying the hosts needs the run's public key")
            attempt = 1 + max(tries.get(node_of(h), 0) for h in batch)
            records = self._start_deployments(topo, record, batch, attempt)
            for host in batch:
                tries[node_of(host)] = tries.get(node_of(host), 0) + 1
            self._stamp_ends(records, by_node, self._wait_deployments(records))
            self._absorb(records, by_node, done, failed, options.environment.name, run_jobs)
        for host in hosts:
            if host.id in done:
                host.state, host.reason = HOST_OK, None
        record.deployed = sorted(done)
        ko = [h for h in hosts if h.id not in done]
        for host in ko:
            host.state = HOST_KO
            host.reason = failed.get(node_of(host), "not deployed")
        if ko:
            log.warning("%d hosts failed Kadeploy twice and are excluded: %s", len(ko),
                        ", ".join(f"{h.id} ({h.reason})" for h in ko))
            self._replace_vms(topo, record, ko)
        pool = AddressPool.from_dict(topo.meta.get(POOL_KEY))
        if pool.ranges:
            assign(topo, pool)
        return self._save(topo, record)

    def _in_vlan(self, topo: Topology, hosts: Sequence[Host], vlan: str) -> set[str]:
        index = topo.host_index()
        inside: set[str] = set()
        for site in dict.fromkeys(index[h.id][0].id for h in hosts):
            try:
                items = self.api.get(f"/sites/{site}/vlans/{vlan}/nodes").get("items", [])
            except ApiError as error:
                if error.status != 404:
                    raise
                items = []
            inside.update(str(item.get("uid")) for item in items)
        return inside

    def _start_deployments(self, topo: Topology, record: Grid5000Record, hosts: Sequence[Host],
                           attempt: int) -> list[DeploymentRecord]:
        env = record.options.environment
        by_site: dict[str, list[str]] = {}
        index = topo.host_index()
        for host in hosts:
            by_site.setdefault(index[host.id][0].id, []).append(node_of(host))
        records = []
        for site, nodes in by_site.items():
            doc = submit_deployment(self.api, site, nodes, env.spec(site), self.public_key or "", record.vlan,
                                    user=self.login, sleep=self.sleep)
            deployment = DeploymentRecord(site, str(doc["uid"]), nodes, env.name, attempt,
                                          str(doc.get("status") or "processing"))
            for host in hosts:
                if node_of(host) in nodes:
                    stamp(host, DEPLOY_STARTED)
            # On record as soon as it runs, before anything says so: a run stopped from here on waits for
            # it when resumed, and destroy knows it.
            records.append(deployment)
            record.deployments.append(deployment)
            self._save(topo, record)
            log.info("deploying %s on %d hosts of %s (%s, attempt %d)", env.name, len(nodes), site,
                     doc["uid"], attempt)
        return records

    def _wait_deployments(self, records: Sequence[DeploymentRecord]) -> dict[str, float]:
        """Wait until the deployments end; deployment uid → when (epoch seconds) it was seen ended."""
        ended: dict[str, float] = {}

        def report(all_records: Sequence[DeploymentRecord]) -> None:
            now = time.time()
            for r in all_records:
                if r.status in FINAL:
                    ended.setdefault(r.uid, now)
            items = tuple(ProgressItem(f"{r.site}:{r.uid}", r.status) for r in all_records)
            running = sum(1 for r in all_records if r.status not in FINAL)
            message = (f"Kadeploy: {running} of {len(all_records)} deployments running" if running
                       else "Kadeploy: deployments done")
            self._report(ProgressReport("deploy_hosts", message, items))

        wait_deployments(self.api, records, poll=self.poll, sleep=self.sleep, progress=report)
        return ended

    @staticmethod
    def _stamp_ends(records: Sequence[DeploymentRecord], by_node: dict[str, Host],
                    ended: dict[str, float]) -> None:
        """Each host's deployment ends when its deployment was seen ended (the run's timeline)."""
        for deployment in records:
            for node in deployment.nodes:
                if node in by_node and deployment.uid in ended:
                    stamp(by_node[node], DEPLOYED, ended[deployment.uid])

    @staticmethod
    def _run_jobs(topo: Topology, record: Grid5000Record) -> dict[str, str]:
        """Host → the run's jobs on its site, as the deployment marker names them."""
        index = topo.host_index()
        sites = {host.id: index[host.id][0].id for host in topo.hosts()}
        return {host: job_keys(site, [job.id for job in record.jobs if job.site == site])
                for host, site in sites.items()}

    def _absorb(self, records: Sequence[DeploymentRecord], by_node: dict[str, Host], done: set[str],
                failed: dict[str, str], env_name: str, run_jobs: dict[str, str]) -> None:
        ok_hosts: list[tuple[str, str]] = []
        for deployment in records:
            for node in deployment.nodes:
                if node in deployment.ko:
                    failed[node] = deployment.ko[node]
                elif node in by_node:
                    failed.pop(node, None)
                    ok_hosts.append((by_node[node].id, deployment.uid))
        if self.marker is not None and ok_hosts:
            for uid in dict.fromkeys(uid for _, uid in ok_hosts):
                hosts = [h for h, u in ok_hosts if u == uid]
                for jobs in dict.fromkeys(run_jobs.get(h, "") for h in hosts):
                    self.marker.mark([h for h in hosts if run_jobs.get(h, "") == jobs], env_name, uid, jobs)
        done.update(h for h, _ in ok_hosts)

    def _replace_vms(self, topo: Topology, record: Grid5000Record, ko: Sequence[Host]) -> None:
        displaced = [vm for host in ko for vm in host.vms]
        if not displaced:
            return
        try:
            for warning in evacuate(topo, ko, record.options.placement):
                log.warning("%s", warning)
        except NotEnoughCapacity as error:
            self._save(topo, record)
            raise DeploymentError(
                f"{len(ko)} hosts failed Kadeploy twice ({', '.join(h.id for h in ko)}); their "
                f"{len(displaced)} VMs do not fit on the {len(topo.hosts()) - len(ko)} others: {error} "
                "(the jobs are left running: vm5k --destroy OUTDIR ends them)", topology=topo) from None
        log.info("%d VMs of the excluded hosts placed on the others", len(displaced))

    # -- destroy -----------------------------------------------------------------------------------------

    def reservation_over(self, topology: Topology) -> str | None:
        """Why the run's reservation is over (a job ended, was killed or is unknown to OAR), or None while
        every job of the run may still hold its hosts. Asked of the API, never of the hosts: once a job
        has ended, Grid'5000 reboots its nodes, or gives them to someone else."""
        over = []
        for job in Grid5000Record.load(topology).jobs:
            try:
                state = str(get_job(self.api, job.site, job.id).get("state", "")).lower()
            except ApiError as error:
                if error.status != 404:
                    raise
                state = "unknown to OAR"
            if state not in ACTIVE_STATES or state == "finishing":  # finishing: its nodes are rebooting
                over.append(f"job {job.label} is {state}")
        return "; ".join(over) or None

    def destroy(self, topology: Topology, *, kill_given: bool = False, timeout: float = 300.0) -> Topology:
        """Kill the jobs this run created (and ``-j`` ones with `kill_given`), and wait until they ended."""
        topo = topology.copy()
        record = Grid5000Record.load(topo)
        targets = {(j.site, j.id) for j in record.jobs if kill_given or not j.given}
        run = topo.meta.get(RUN_ID_KEY)
        if run:
            for site in record.sites:
                for doc in find_jobs(self.api, site, f"vm5k-{run}", self.login):
                    targets.add((site, int(doc["uid"])))
        for site, job_id in sorted(targets):
            if delete_job(self.api, site, job_id):
                log.info("killing job %s:%s", site, job_id)
        states = wait_gone(self.api, targets, timeout=timeout, poll=min(self.poll, 2.0), sleep=self.sleep)
        for job in record.jobs:
            job.state = states.get((job.site, job.id), job.state)
        record.destroyed = True
        return self._save(topo, record)


__all__ = ["JOB", "Grid5000Platform"]
