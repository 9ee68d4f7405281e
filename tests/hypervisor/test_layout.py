"""Per-run names on hosts: a run's prefix never matches another run's domains or folders."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vm5k.errors import UsageError
from vm5k.hypervisor.layout import HostLayout, check_base

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.-]{0,20}", fullmatch=True)


@given(ids, ids, ids)
def test_domains_of_one_run_are_never_another_runs(run_a: str, run_b: str, vm: str) -> None:
    a, b = HostLayout(run_a), HostLayout(run_b)
    name = a.domain_name(vm)
    assert a.vm_of_domain(name) == vm
    if run_a != run_b:
        assert b.vm_of_domain(name) is None
        assert not a.run_dir.startswith(b.run_dir + "/") and a.run_dir != b.run_dir


@given(ids, ids)
def test_every_vm_path_is_inside_the_run_folder(run: str, vm: str) -> None:
    layout = HostLayout(run)
    for path in (layout.disk(vm), layout.seed_iso(vm), layout.domain_xml(vm), layout.console(vm)):
        assert path.startswith(layout.run_dir + "/")


@pytest.mark.parametrize("vm", ["../x", "a/b", "vm 1", "vm;1", "-rf", ""])
def test_hostile_vm_ids_never_make_a_path(vm: str) -> None:
    with pytest.raises(UsageError):
        HostLayout("r1").disk(vm)


@pytest.mark.parametrize("base", ["/", "/tmp", "relative", "/tmp/../etc", "/tmp/a b", "/tmp/$(x)"])
def test_bad_base_folders(base: str) -> None:
    with pytest.raises(UsageError):
        check_base(base)


def test_cache_is_outside_every_run() -> None:
    layout = HostLayout("r1")
    assert not layout.cached("0" * 64, "x.qcow2").startswith(layout.runs_dir)
