"""Importing Keras and its backend without the backend's start-up chatter.

TensorFlow's C++ runtime logs through absl before it reads
``TF_CPP_MIN_LOG_LEVEL`` (the "oneDNN custom operations are on" lines), straight
to file descriptor 2: a user would see them around tiler's one-line messages.
The first import runs under :func:`tiler._logging.quiet_stderr` (shown at ``-vv``).
"""

from __future__ import annotations

import sys

from tiler._logging import quiet_stderr

__all__ = ["import_keras"]


def import_keras():
    """Import and return :mod:`keras` (and so its backend), quietly the first time."""
    if "keras" not in sys.modules:
        with quiet_stderr():
            import keras  # noqa: F401
    import keras

    return keras
