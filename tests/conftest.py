"""Session-wide safety for every test.

Grid'5000 clients (python-grid5000, execo, vm5k itself) read their configuration from the user's home and
default to the real api.grid5000.fr. Before any test runs, HOME points at a fresh temporary folder and the
variables that could name a real API are removed, so nothing here can ever reach the real Grid'5000.
Hypothesis runs without per-example deadlines (see below).
"""

import os
import tempfile

from hypothesis import HealthCheck, settings

# No timing in tests (speed belongs in benchmarks/): hypothesis' per-example deadline and its "too slow"
# health check would fail a correct test on a loaded 2-core machine.
settings.register_profile("vm5k", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("vm5k")

_HOME = tempfile.mkdtemp(prefix="vm5k-test-home-")
os.environ["HOME"] = _HOME
for _var in ("GRID5000_API", "VM5K_API", "VM5K_SSH_CONFIG", "http_proxy", "https_proxy"):
    os.environ.pop(_var, None)

pytest_plugins = ["lab_fixtures"]  # the testbed fixtures (lab_testbed, lab_testbed_factory)
