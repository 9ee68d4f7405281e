"""The one logger set-up of vm5k.

Modules log with ``logging.getLogger(__name__)`` (children of the ``vm5k`` logger) and never configure
anything. The command line calls `setup_logging` once: on a terminal, rich's handler (colours, aligned
times); in a pipe or a file, plain lines with no control codes. `add_file_handler` then adds the outdir's
``vm5k.log``, which gets everything the console gets and debug lines too when ``-v`` is given.

Both are idempotent: calling them again (tests run ``main`` many times in one process) replaces the
handlers they installed instead of stacking them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, TextIO

LOGGER_NAME = "vm5k"
PLAIN_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"
FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_MARK = "_vm5k_handler"  # attribute set on the handlers installed here
_verbosity = 0  # what setup_logging was last given: the outdir's log follows it


def level_for(verbosity: int) -> int:
    """-1 (``-q``): warnings; 0: info; 1 (``-v``): debug."""
    return logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO


def _remove(logger: logging.Logger, kind: str) -> None:
    for handler in list(logger.handlers):
        if getattr(handler, _MARK, None) == kind:
            logger.removeHandler(handler)
            handler.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def console() -> Any | None:
    """The rich Console the terminal handler writes to (for live progress displays), None for plain output.

    A live display must share the logging handler's console, so that log lines scroll above it instead of
    tearing it.
    """
    for handler in logging.getLogger(LOGGER_NAME).handlers:
        if getattr(handler, _MARK, None) == "console":
            return getattr(handler, "console", None)
    return None


def setup_logging(verbosity: int = 0, stream: TextIO | None = None) -> logging.Logger:
    """Configure the ``vm5k`` logger's console handler (on stderr by default) and return the logger."""
    global _verbosity
    _verbosity = verbosity
    stream = stream if stream is not None else sys.stderr
    logger = logging.getLogger(LOGGER_NAME)
    _remove(logger, "console")
    handler: logging.Handler
    if _is_terminal(stream):
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(file=stream), show_path=False, markup=False,
                              rich_tracebacks=False, log_time_format="%H:%M:%S")
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT, datefmt="%H:%M:%S"))
    handler.setLevel(level_for(verbosity))
    setattr(handler, _MARK, "console")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)  # handlers decide what they show
    logger.propagate = False
    return logger


class OutdirLogHandler(logging.FileHandler):
    """``vm5k.log``, which must never stop a run nor print tracebacks when it cannot be written.

    Why: the outdir may fill up (or vanish) in the middle of a run that holds a reservation and VMs; the
    run must go on to save what it can and say how to resume. logging's default reaction to a failed
    write is a multi-line traceback on stderr for every record (and an exception when the file is closed).
    Here the first failure is reported once, in one line, and the file is given up: the console still
    shows everything.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8")
        self.failed: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.failed is None:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if self.failed is not None:
            return
        self.failed = getattr(error, "strerror", None) or str(error) or type(error).__name__
        with contextlib.suppress(OSError, ValueError):  # stderr itself may be gone
            sys.stderr.write(f"vm5k: warning: cannot write {self.baseFilename} ({self.failed}): the log goes "
                             "on on the console only\n")

    def close(self) -> None:
        try:
            super().close()
        except OSError:  # the last buffered lines could not be written either (already reported)
            self.stream = None


def add_file_handler(outdir: str | os.PathLike[str], verbosity: int | None = None,
                     name: str = "vm5k.log") -> Path:
    """Log into ``<outdir>/vm5k.log`` (appending, so a resumed run continues the same log); debug lines
    too when `verbosity` (by default the one `setup_logging` was given) asks for them."""
    if verbosity is None:
        verbosity = _verbosity
    path = Path(outdir) / name
    logger = logging.getLogger(LOGGER_NAME)
    _remove(logger, "file")
    handler = OutdirLogHandler(path)
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    handler.setLevel(logging.DEBUG if verbosity > 0 else logging.INFO)
    setattr(handler, _MARK, "file")
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > handler.level:
        logger.setLevel(handler.level)
    return path


def remove_file_handler() -> None:
    """Close the outdir's log (at the end of main, so tests can remove the folder)."""
    _remove(logging.getLogger(LOGGER_NAME), "file")
