"""Shared fixtures: tiny GeoTIFFs written on the fly and small real Keras models."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage

import tiler  # noqa: F401  (sets the Keras backend before keras is imported)
from tests.reference import build_constant_model, build_mix_model, build_tiny_unet

# Converted networks (OpenVINO IR) go to a folder of this test session, not the user's ~/.cache.
_CACHE = tempfile.mkdtemp(prefix="tiler-test-cache-")
os.environ["TILER_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, True)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DUBAI = SHARED / "dubai_aerial"
SENTINEL2 = SHARED / "sentinel2_18SVG_20160112"


def needs_shared(path: Path):
    """Skip a test when ``../shared/data`` (or part of it) is absent."""
    return pytest.mark.skipif(not path.exists(), reason=f"shared data {path} is absent on this machine")


def write_tif(path, array, *, nodata=None, crs="EPSG:32618", transform=None, descriptions=None,
              photometric=None, **extra):
    """Write ``array`` (band, row, col) as a GeoTIFF with an explicit profile."""
    array = np.asarray(array)
    profile = {
        "driver": "GTiff", "width": array.shape[2], "height": array.shape[1], "count": array.shape[0],
        "dtype": array.dtype.name, "nodata": nodata,
        "crs": CRS.from_user_input(crs) if crs else None,
        "transform": transform or Affine(10.0, 0.0, 435730.0, 0.0, -10.0, 4200000.0),
        "tiled": True, "blockxsize": 64, "blockysize": 64, **extra,
    }
    if photometric:
        profile["photometric"] = photometric
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(array)
        for i, d in enumerate(descriptions or (), start=1):
            ds.set_band_description(i, d)
    return str(path)


@pytest.fixture
def tif(tmp_path):
    """Factory: ``tif(array, name="scene.tif", **profile) -> path``."""

    def make(array, name="scene.tif", **kwargs):
        return write_tif(tmp_path / name, array, **kwargs)

    return make


def smooth_image(channels: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random uint8 image (band, row, col): texture for the models to see."""
    rng = np.random.default_rng(seed)
    r = np.linspace(0, 1, height)[:, None]
    c = np.linspace(0, 1, width)[None, :]
    img = np.empty((channels, height, width), np.float64)
    for k in range(channels):
        a, b, ph = rng.uniform(2, 9, 3)
        img[k] = 0.5 + 0.25 * np.sin(a * r * 3 + ph) * np.cos(b * c * 3) + 0.2 * rng.random((height, width))
    return np.clip(img * 255, 0, 255).astype(np.uint8)


@pytest.fixture
def runner():
    """click's CliRunner for the `tiler` command."""
    from click.testing import CliRunner

    return CliRunner()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_model(model_dir):
    """A real (randomly initialised) U-Net, 3 channels red/green/blue, 3 classes."""
    return build_tiny_unet(model_dir / "tiny.keras")


@pytest.fixture(scope="session")
def constant_model(model_dir):
    """Predicts exactly (0.25, 0.75) everywhere."""
    return build_constant_model(model_dir / "constant.keras", (0.25, 0.75))


@pytest.fixture(scope="session")
def mix_model(model_dir):
    """A fixed 1x1 channel mix: out = W @ normalised(x) + b, known in closed form."""
    return build_mix_model(model_dir / "mix.keras")


def labelled_folders(tmp_path, bands, label):
    """train/ and val/ folders (img/, mask/) of two synthetic images each; ``label(img)`` gives the mask."""
    for split, seed in (("train", 1), ("val", 2)):
        (tmp_path / split / "img").mkdir(parents=True)
        (tmp_path / split / "mask").mkdir(parents=True)
        for i in range(2):
            img = smooth_image(bands, 40, 48, seed=seed * 10 + i)
            write_tif(tmp_path / split / "img" / f"im{i}.tif", img, crs=None)
            write_tif(tmp_path / split / "mask" / f"im{i}.tif", label(img).astype(np.uint8)[None], crs=None)


def blobs(shape, classes, seed, sigma=3.0):
    """A random class map of smooth blobs, uint8 of shape ``shape``: class regions of every size and shape."""
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random((classes,) + shape), (0, sigma, sigma)).argmax(0).astype(np.uint8)
