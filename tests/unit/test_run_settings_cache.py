"""RunSettings' TCG translation cache: None (sized per VM from its memory) or a positive size, never 0."""

from __future__ import annotations

import pytest

from vm5k.errors import UsageError
from vm5k.hypervisor.settings import RunSettings

KEY = "ssh-ed25519 AAAAC3Nz vm5k"


@pytest.mark.parametrize("cache", [0, -1])
def test_a_cache_of_no_size_is_refused(cache: int) -> None:
    with pytest.raises(UsageError, match="TCG cache must be positive"):
        RunSettings(run_id="r1", public_key=KEY, tcg_tb_cache_mib=cache)


@pytest.mark.parametrize("cache", [None, 1, 40])
def test_sized_per_vm_or_forced(cache: int | None) -> None:
    settings = RunSettings(run_id="r1", public_key=KEY, tcg_tb_cache_mib=cache)
    assert RunSettings.from_dict(settings.to_dict()).tcg_tb_cache_mib == cache
