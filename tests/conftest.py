"""Session-wide safety for every test.

Grid'5000 clients (python-grid5000, execo, vm5k itself) read their configuration from the user's home and
default to the real api.grid5000.fr. Before any test runs, HOME points at a fresh temporary folder and the
variables that could name a real API are removed, so nothing here can ever reach the real Grid'5000.
Hypothesis runs without per-example deadlines, and in CI a skipped test fails (see below).
"""

import os
import tempfile
from collections.abc import Iterator

import pytest
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
# run by test_enoslib.py in EnOSlib's own venv: this one has no enoslib to import for --doctest-modules
collect_ignore = ["testbed_lab/enoslib_client.py"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """In CI (``CI=true``), a skipped test is a failed one.

    The integration tests skip on a machine without root, namespaces, libvirt or QEMU; CI has them all
    (scripts/setup.sh installs them), so a skip there means the suite silently proved less than it says.
    """
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every test must run: {reason}"
