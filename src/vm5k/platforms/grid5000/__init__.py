"""vm5k on Grid'5000: hardware, planning, OAR jobs, Kadeploy, KaVLAN and subnets, through the REST API.

The same code talks to the real API (``https://api.grid5000.fr/stable``) and to the testbed's: it only
speaks HTTP (python-grid5000) and SSH (vm5k.remote). `Grid5000Platform` offers the steps of
``vm5k.platforms`` (plan, plan_text, reserve, wait_running, resources, deploy_hosts, destroy).

Modules: ``credentials`` (which API, which credentials), ``api`` (python-grid5000 with errors, retries and
the server's clock), ``reference`` (hardware), ``status`` (OAR status as planning data), ``oar`` (jobs,
exactly once), ``reservation`` (all sites or none, waiting), ``kadeploy`` (deployments), ``deployed``
(the marker that tells deployed hosts), ``hosts`` (the topology's hosts and KaVLAN names), ``record``
(what the run keeps in ``topology.meta``), ``platform`` (the steps).

A run against the testbed, at the level of this API. Start a testbed API in another shell (it prints its
URL; it needs no credentials)::

    $ vm5k-testbed serve --port 8000 --sites rennes
    http://127.0.0.1:8000/stable

then, in Python (without an ssh_config no host is checked over SSH: every host is deployed)::

    >>> from vm5k.cli import parse_request
    >>> from vm5k.platforms import make_platform
    >>> request, _ = parse_request(["-n", "4", "-r", "rennes:1", "-w", "0:30:00", "-o", "/tmp/out",
    ...                             "--api", "http://127.0.0.1:8000/stable"])
    >>> platform = make_platform("testbed", api=request.api, public_key="ssh-ed25519 AAAA... run-key",
    ...                          progress=lambda report: print(report.message), poll=1.0)
    >>> topo = platform.plan(request.topology, request)   # doctest: +SKIP
    >>> print(platform.plan_text(topo))                   # doctest: +SKIP
    Planned on the API server's clock (http://127.0.0.1:8000/stable): now 2026-11-25 10:00:00 Europe/Paris
    Start: 2026-11-25 10:00:00 Europe/Paris (now), walltime 0:30:00, end 2026-11-25 10:30:00
    OAR job on rennes (types deploy, name vm5k-20261125090000-5d1c2e3f):
    {cluster='paradoxe'}/nodes=1+slash_22=1,walltime=0:30:00
    Would reserve 1 host on 1 site for 0:30:00:
    ...
    >>> topo = platform.reserve(topo)                     # doctest: +SKIP
    >>> topo = platform.wait_running(topo)                # doctest: +SKIP
    1 job running
    >>> topo = platform.resources(topo)                   # doctest: +SKIP
    >>> topo = platform.deploy_hosts(topo)                # doctest: +SKIP
    >>> [(vm.id, vm.host, vm.ip, vm.mac) for vm in topo.vms()][:1]   # doctest: +SKIP
    [('vm-1', 'paradoxe-1.rennes.grid5000.fr', '10.156.0.1', '00:16:3E:9C:00:01')]
    >>> topo = platform.destroy(topo)                     # doctest: +SKIP

``tests/grid5000/test_g5k_reservation.py`` runs the same steps on an in-process testbed whose clock the
test moves forward; ``tests/grid5000/test_g5k_lab.py`` runs them on the testbed's real nodes over SSH.
"""

from vm5k.platforms.grid5000.platform import Grid5000Platform

__all__ = ["Grid5000Platform"]
