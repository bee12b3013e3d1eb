"""tiler: segment very large satellite scenes with a U-Net, streamed and seamless.

Public entry points: :func:`run_scene` (stream a scene into a GeoTIFF mask),
:func:`index_scene` (spectral indices into a GeoTIFF) and :func:`predict` (blend an
in-memory array).

The package is built in layers, top to bottom (a module imports only from its own
package and from layers below it; ``lint-imports`` checks it, see ``pyproject.toml``):

1. :mod:`tiler.cli` (the command);
2. :mod:`tiler.training`; 3. :mod:`tiler.distributed`;
4. :mod:`tiler.info`, :mod:`tiler.vectorize`, :mod:`tiler.evaluate`, :mod:`tiler.view`, :mod:`tiler.bench`;
5. :mod:`tiler.pipeline` (the run);
6. :mod:`tiler.sinks`, :mod:`tiler.reports`; 7. :mod:`tiler.engine`, :mod:`tiler.source`;
8. :mod:`tiler.config`;
9. :mod:`tiler.model`, :mod:`tiler.registration`, :mod:`tiler.output`, :mod:`tiler.metrics`;
10. :mod:`tiler.scene`, :mod:`tiler.indices`, :mod:`tiler.domain`, :mod:`tiler.labels`;
11. :mod:`tiler.blend`, :mod:`tiler.destination`, :mod:`tiler.plan`;
12. :mod:`tiler.errors` and the private helpers.
"""

import logging
import os

# Keras reads its backend at import time; TensorFlow is the default, and
# KERAS_BACKEND=jax or torch runs the same models without it.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow's C++ log lines (even its "E" lines, such as oneDNN falling back to Eigen for an
# integer op while training) are not errors of the run: tiler reports failures itself.
# TF_CPP_MIN_LOG_LEVEL=0 in the environment shows them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# JAX would take 75 % of a GPU's memory at import; tiler's network needs a
# fraction of it and shares the device with anything else the user runs.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from tiler._version import __version__  # noqa: E402

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__", "predict", "run_scene", "index_scene"]


def __getattr__(name: str):
    # The engine (numba, rasterio) loads on first use, so that `tiler --help`
    # and commands that need no network start fast (PEP 562).
    if name in ("predict", "run_scene", "index_scene"):
        from tiler import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'tiler' has no attribute {name!r}")
