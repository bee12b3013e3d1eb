"""tiler: segment very large satellite scenes with a U-Net, streamed and seamless.

Public entry points: :func:`run_scene` (stream a scene into a GeoTIFF mask),
:func:`index_scene` (spectral indices into a GeoTIFF) and :func:`predict` (blend an
in-memory array). Subpackages: :mod:`tiler.plan`, :mod:`tiler.scene` (band groups,
manifests, sensor folders), :mod:`tiler.registration`, :mod:`tiler.indices`,
:mod:`tiler.blend`, :mod:`tiler.model`, :mod:`tiler.pipeline`.
"""

import logging
import os

# Keras reads its backend at import time; TensorFlow is the default, and
# KERAS_BACKEND=jax or torch runs the same models without it.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tiler._version import __version__  # noqa: E402
from tiler.pipeline import index_scene, predict, run_scene  # noqa: E402

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__", "predict", "run_scene", "index_scene"]
