"""The run's SSH key pair: generated per run, so a run's hosts and VMs trust exactly that run.

The private key goes into the outdir with mode 0600 (``id_ed25519``), the public one next to it; both are
named in the outdir's ssh_config. ed25519 is the default because it is small and fast, and Grid'5000's
Kadeploy and cloud-init accept it (the user's own keys of any type can still be added).
"""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh

PRIVATE_KEY = "id_ed25519"
PUBLIC_KEY = "id_ed25519.pub"


def ensure_run_key(outdir: Path, comment: str) -> tuple[Path, str]:
    """The run's private key path and public key line, generated on the first call, reused afterwards.

    Written through a temporary file and a rename, with 0600 from the start: a crash never leaves a
    readable or half-written private key.
    """
    private = outdir / PRIVATE_KEY
    public = outdir / PUBLIC_KEY
    if not private.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
        temporary = outdir / f".{PRIVATE_KEY}.tmp"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(key.export_private_key())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, private)
        public.write_bytes(key.export_public_key())
    os.chmod(private, 0o600)
    if not public.exists():
        public.write_bytes(asyncssh.read_private_key(private).export_public_key())
    return private, public.read_text().strip()
