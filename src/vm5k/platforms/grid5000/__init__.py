"""vm5k on Grid'5000: hardware, planning, OAR jobs, Kadeploy, KaVLAN and subnets, through the REST API.

The same code talks to the real API (``https://api.grid5000.fr/stable``) and to the testbed's: it only
speaks HTTP (python-grid5000) and SSH (vm5k.remote). `Grid5000Platform` offers the steps of
``vm5k.platforms`` (plan, plan_text, reserve, wait_running, resources, deploy_hosts, destroy).

Modules: ``credentials`` (which API, which credentials), ``api`` (python-grid5000 with errors, retries and
the server's clock), ``reference`` (hardware), ``status`` (OAR status as planning data), ``oar`` (jobs,
exactly once), ``reservation`` (all sites or none, waiting), ``kadeploy`` (deployments), ``deployed``
(the marker that tells deployed hosts), ``hosts`` (the topology's hosts and KaVLAN names), ``record``
(what the run keeps in ``topology.meta``), ``platform`` (the steps).

A run against the testbed, at the level of this API (the testbed is started in this process; its API
needs no credentials; nodes get deployed without SSH checks since none is configured)::

    >>> from g5k_testbed.http_server import start_server       # doctest: +SKIP
    >>> from g5k_testbed.testbed import TestbedConfig           # doctest: +SKIP
    >>> server = start_server(TestbedConfig(sites=["rennes"]))  # doctest: +SKIP
    >>> from vm5k.cli import parse_request
    >>> from vm5k.platforms import make_platform
    >>> request, _ = parse_request(["-n", "4", "-r", "rennes:1", "-w", "0:30:00", "-o", "/tmp/out",
    ...                             "--api", "http://127.0.0.1:8000/stable"])
    >>> platform = make_platform("testbed", api=request.api, public_key="ssh-ed25519 AAAA... run-key")
    >>> topo = platform.plan(request.topology, request)   # doctest: +SKIP
    >>> print(platform.plan_text(topo))                   # doctest: +SKIP
    >>> topo = platform.reserve(topo)                     # doctest: +SKIP
    >>> topo = platform.wait_running(topo)                # doctest: +SKIP
    >>> topo = platform.resources(topo)                   # doctest: +SKIP
    >>> topo = platform.deploy_hosts(topo)                # doctest: +SKIP
    >>> [(vm.id, vm.host, vm.ip, vm.mac) for vm in topo.vms()]   # doctest: +SKIP
    >>> topo = platform.destroy(topo)                     # doctest: +SKIP
    >>> server.stop()                                     # doctest: +SKIP

(``tests/grid5000/test_reservation.py`` runs exactly this, with the testbed's clock moved forward.)
"""

from vm5k.platforms.grid5000.platform import Grid5000Platform

__all__ = ["Grid5000Platform"]
