"""Grid'5000 as a kind of platform: chosen when an API is configured, reached through it and SSH.

The API is ``--api``, ``VM5K_API``, ``~/.python-grid5000.yaml`` or, on a Grid'5000 frontend, the local one
(``credentials.py``). From outside Grid'5000 every connection goes through the access gateway, which
takes fewer parallel connections (`Access.gateway`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace

from vm5k.platforms import Access, Platform, Services
from vm5k.platforms.grid5000.credentials import ENV_API, credentials_path, on_grid5000_frontend
from vm5k.request import Request
from vm5k.topology import Host

log = logging.getLogger(__name__)


class Grid5000Kind:
    """`vm5k.platforms.PlatformKind` of a Grid'5000 REST API (the real one, or a testbed's given by URL)."""

    name = "grid5000"

    def applies(self, request: Request) -> bool:
        return bool(request.api or os.environ.get(ENV_API) or credentials_path().exists()
                    or on_grid5000_frontend())

    def validate(self, request: Request) -> None:
        """Nothing to check beyond the request's own rules."""

    def prepare(self, request: Request) -> Access:
        log.info("platform: grid5000 (%s)",
                 f"API {request.api}" if request.api else "API from VM5K_API or ~/.python-grid5000.yaml")
        return Access(api=request.api, ssh_config=request.ssh_config, gateway=not on_grid5000_frontend())

    def reach_again(self, access: Access, api: str | None, ssh_config: str | None) -> Access:
        return replace(access, api=api or access.api, ssh_config=ssh_config or access.ssh_config)

    def build(self, access: Access, services: Services) -> Platform:
        from vm5k.platforms.grid5000.platform import Grid5000Platform

        return Grid5000Platform(access.api, name=self.name, ssh=services.ssh, public_key=services.public_key,
                                progress=services.progress, checkpoint=services.checkpoint,
                                sleep=services.sleep)

    def hardware(self, request: Request) -> list[Host]:
        from vm5k.platforms.grid5000.platform import Grid5000Platform

        return Grid5000Platform(request.api, name=self.name).hardware(request)


KIND = Grid5000Kind()
