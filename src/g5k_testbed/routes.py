"""The API's routes, as data: (method, path template, handler).

Paths are relative to the version prefix (`/3.0`, `/stable`, `/sid`); `{name}` matches one path segment.
Admin routes (prefix `/_testbed`) are only served when the server was started with admin enabled.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from g5k_testbed import api_admin, api_kadeploy, api_kavlan, api_oar, api_reference
from g5k_testbed.http_types import Reply, Request
from g5k_testbed.testbed import Testbed

Handler = Callable[[Testbed, Request], Reply]

S = "/sites/{site}"
C = S + "/clusters/{cluster}"

API_ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/", api_reference.root),
    ("GET", "/versions", api_reference.versions),
    ("GET", "/versions/{version}", api_reference.version),
    ("GET", "/network_equipments", api_reference.grid_equipments),
    ("GET", "/network_equipments/{equipment}", api_reference.grid_equipment),
    ("GET", "/sites", api_reference.sites),
    ("GET", S, api_reference.site),
    ("GET", S + "/versions", api_reference.versions),
    ("GET", S + "/versions/{version}", api_reference.version),
    ("GET", S + "/network_equipments", api_reference.site_equipments),
    ("GET", S + "/network_equipments/{equipment}", api_reference.site_equipment),
    ("GET", S + "/servers", api_reference.site_servers_list),
    ("GET", S + "/servers/{uid}", api_reference.site_server),
    ("GET", S + "/pdus", api_reference.site_pdus_list),
    ("GET", S + "/pdus/{uid}", api_reference.site_pdu),
    ("GET", S + "/clusters", api_reference.clusters),
    ("GET", C, api_reference.cluster),
    ("GET", C + "/versions", api_reference.versions),
    ("GET", C + "/versions/{version}", api_reference.version),
    ("GET", C + "/nodes", api_reference.nodes),
    ("GET", C + "/nodes/{node}", api_reference.node),
    ("GET", C + "/nodes/{node}/versions", api_reference.versions),
    ("GET", C + "/nodes/{node}/versions/{version}", api_reference.version),
    ("GET", C + "/status", api_oar.cluster_status),
    ("GET", S + "/status", api_oar.site_status),
    ("GET", S + "/jobs", api_oar.list_jobs),
    ("POST", S + "/jobs", api_oar.create_job),
    ("GET", S + "/jobs/{job}", api_oar.show_job),
    ("DELETE", S + "/jobs/{job}", api_oar.delete_job),
    ("GET", S + "/deployments", api_kadeploy.list_deployments),
    ("POST", S + "/deployments", api_kadeploy.create_deployment),
    ("GET", S + "/deployments/{deployment}", api_kadeploy.show_deployment),
    ("DELETE", S + "/deployments/{deployment}", api_kadeploy.delete_deployment),
    ("PUT", S + "/deployments/{deployment}", api_kadeploy.refresh_deployment),
    ("GET", S + "/environments", api_kadeploy.environments),
    ("GET", S + "/environments/{environment}", api_kadeploy.environment),
    ("GET", S + "/files/{file}", api_kadeploy.key_file),
    ("GET", S + "/vlans", api_kavlan.vlans),
    ("GET", S + "/vlans/nodes", api_kavlan.all_nodes),
    ("POST", S + "/vlans/nodes", api_kavlan.query_nodes),
    ("GET", S + "/vlans/nodes/{node}", api_kavlan.node),
    ("GET", S + "/vlans/users", api_kavlan.users),
    ("GET", S + "/vlans/users/{user}", api_kavlan.user),
    ("GET", S + "/vlans/{vlan}", api_kavlan.vlan),
    ("GET", S + "/vlans/{vlan}/nodes", api_kavlan.vlan_nodes),
    ("POST", S + "/vlans/{vlan}/nodes", api_kavlan.move_nodes),
    ("GET", S + "/vlans/{vlan}/users", api_kavlan.vlan_users),
    ("GET", S + "/vlans/{vlan}/users/{user}", api_kavlan.vlan_user),
    ("PUT", S + "/vlans/{vlan}/dhcpd", api_kavlan.dhcpd),
]

ADMIN_PREFIX = "/_testbed"
ADMIN_ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/clock", api_admin.get_clock),
    ("POST", "/clock", api_admin.set_clock),
    ("GET", "/faults", api_admin.get_faults),
    ("PUT", "/faults", api_admin.set_faults),
    ("PATCH", "/faults", api_admin.set_faults),
    ("GET", "/state", api_admin.state),
    ("DELETE", "/sites/{site}/jobs/{job}", api_admin.kill_job),
]

VERSION_PREFIXES = ("/3.0", "/stable", "/sid")


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


def _compile(template: str) -> re.Pattern[str]:
    regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    return re.compile(f"^{regex}$")


class Router:
    """Matches (method, path) to a handler; tells 404 from 405 (with the allowed methods)."""

    def __init__(self, routes: list[tuple[str, str, Handler]]) -> None:
        self.routes = [Route(method, _compile(template), handler) for method, template, handler in routes]

    def match(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], list[str]]:
        allowed: list[str] = []
        for route in self.routes:
            m = route.pattern.match(path)
            if m is None:
                continue
            if route.method == method:
                return route.handler, m.groupdict(), []
            allowed.append(route.method)
        return None, {}, allowed
