"""vm5k: deploy hundreds of virtual machines on Grid'5000 (or on its testbed) with one command."""

__version__ = "1.0.0.dev0"
