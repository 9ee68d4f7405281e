"""Errors of the lab, split by who must act: the user (bad input) or the machine (a step failed)."""


class LabError(Exception):
    """A step of the testbed failed; the message says what and, when possible, what to do."""


class UsageError(LabError):
    """Bad command-line input: reported as `vm5k-testbed: error: ...` with exit status 2."""
