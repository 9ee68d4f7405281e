"""vm5k: deploy hundreds of virtual machines on Grid'5000 (or on its testbed) with one command."""

import warnings

__version__ = "1.0.0.dev0"

# cryptography 51 deprecates DSA, and asyncssh (which still supports DSA keys) touches those names when it
# is imported: every vm5k command would begin with ten lines of a library's deprecation notice that the
# user can do nothing about. vm5k never makes or accepts DSA keys (its keys are ed25519). Only that notice
# from asyncssh is silenced; any other warning still shows.
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh(\.|$)")
