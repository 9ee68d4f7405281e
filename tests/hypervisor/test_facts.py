"""Host facts: the script run on this machine, and the parser on odd input."""

from __future__ import annotations

import os

from tests.hypervisor.shell import run_like_ssh

from vm5k.hypervisor.facts import facts_command, parse_facts
from vm5k.hypervisor.layout import HostLayout


def test_facts_of_this_machine() -> None:
    result = run_like_ssh(facts_command(HostLayout("r1")))
    facts = parse_facts(result.stdout)
    assert facts.nproc == len(os.sched_getaffinity(0))
    assert facts.uid == os.geteuid()
    assert facts.mem_kib > 0 and facts.ram_bytes > 0
    assert facts.kvm_dev == os.path.exists("/dev/kvm")
    assert facts.kvm_pvm == os.path.exists("/sys/module/kvm_pvm")


def test_parser_tolerates_garbage_and_takes_the_cgroup_limit() -> None:
    facts = parse_facts("junk\nnproc=abc\nmem_kib=1000\nmem_limit=512000\naddress=nonsense\n=x\n")
    assert facts.nproc == 1 and facts.address == "" and facts.ram_bytes == 512000
    assert parse_facts("mem_kib=1000\nmem_limit=9223372036854771712\n").ram_bytes == 1024000
