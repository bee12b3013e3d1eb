"""tiler's log levels: NOTICE sits between INFO and WARNING.

A notice is something a user must see on every run without ``-v`` (how the
model's channels were mapped to unnamed bands, what a sensor layout assumed)
but that is not a problem; ``-q`` hides it with the progress bar.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Iterator

__all__ = ["NOTICE", "notice", "quiet_stderr"]

#: Level of a notice (``logging.INFO`` is 20, ``logging.WARNING`` 30).
NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")


def notice(logger: logging.Logger, msg: str, *args: object) -> None:
    """Log ``msg`` at :data:`NOTICE`: shown on stderr by default, hidden by ``-q``."""
    logger.log(NOTICE, msg, *args)


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Point file descriptor 2 at the null device inside the block, unless tiler logs at DEBUG.

    For C libraries that print straight to stderr, past Python's logging: GDAL's
    bundled libtiff (``_tiffWriteProc: No space left on device.``) and
    TensorFlow's absl start-up lines. tiler says what went wrong in its own one
    line; ``-vv`` shows everything.
    """
    if logging.getLogger("tiler").isEnabledFor(logging.DEBUG):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real descriptor 2 (an embedding host): nothing to hide
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
