"""The streaming engine against a definition-level NumPy blend, on the issue's grid of cases."""

import numpy as np
import pytest

from tests.reference import naive_blend
from tiler.engine import PatchStats, stream
from tiler.blend import WINDOWS, get_window
from tiler.model import Predictor
from tiler.plan import PatchGrid, reflect_indices

SHAPES = [(600, 600), (1000, 1000), (512, 384), (384, 512), (100, 70),
          pytest.param((2000, 2000), marks=pytest.mark.slow)]


def _image(shape, seed=0):
    rng = np.random.default_rng(seed)
    r = np.linspace(0, 6, shape[0])[:, None]
    c = np.linspace(0, 4, shape[1])[None, :]
    img = np.stack([np.sin(r + k) * np.cos(c * (k + 1)) for k in range(3)]) + 0.1 * rng.random((3,) + shape)
    return img.astype(np.float32)


def _mix(k):
    return np.random.default_rng(k).uniform(-1, 1, (k, 3)).astype(np.float32)


def _engine_blend(image, network, classes, *, patch, overlap, window="spline", tta="none", strip_rows=300,
                  band_width=450):
    """Stream an in-memory image through the engine of `tiler run`; collect the emitted rows."""
    _, h, w = image.shape
    grid = PatchGrid.from_overlap(h, w, patch_size=patch, overlap=overlap)
    predictor = Predictor.from_network(network, classes, batch_size=7, tta=tta)
    out = np.full((classes, h, w), np.nan, np.float32)

    def read(rows, cols):
        data = image[:, reflect_indices(*rows, h)][:, :, reflect_indices(*cols, w)]
        return data, np.ones(data.shape[1:], bool)

    for block in stream(read, grid, predictor, get_window(window, patch), strip_rows=strip_rows,
                        band_width=band_width, stats=PatchStats()):
        (e0, e1), (c0, c1) = block.rows, block.cols
        assert np.isnan(out[:, e0:e1, c0:c1]).all(), "a row was emitted twice"
        out[:, e0:e1, c0:c1] = block.values()
    assert not np.isnan(out).any(), "a row was never emitted"
    return out


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("patch", [64, 128, 256])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75])
@pytest.mark.parametrize("k", [1, 3, 6])
def test_engine_equals_definition_level_numpy_blend(shape, patch, overlap, k):
    image = _image(shape, seed=k)
    mix = _mix(k)

    def network(batch):  # not pointwise: overlapping patches disagree, so blending matters
        return (np.einsum("kc,ncij->nkij", mix, batch)
                + 0.3 * batch[:, :1].mean(axis=(2, 3), keepdims=True)).astype(np.float32)

    def one(patch_array):
        return network(patch_array[None].astype(np.float32))[0].astype(np.float64)

    stride = patch - int(round(overlap * patch))
    expected = naive_blend(image, one, patch, stride, get_window("spline", patch).astype(np.float64))
    got = _engine_blend(image, network, k, patch=patch, overlap=overlap)
    assert np.abs(got - expected).max() <= 1e-6


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("window", sorted(WINDOWS) + ["callable"])
def test_identity_like_model_returns_the_mixed_image(shape, window):
    image = _image(shape, seed=1)
    mix = _mix(3)
    if window == "callable":
        window = lambda p: np.outer(np.linspace(1, 2, p), np.linspace(2, 1, p))  # not even symmetric  # noqa: E731
    got = _engine_blend(image, lambda b: np.einsum("kc,ncij->nkij", mix, b), 3, patch=64, overlap=0.5,
                        window=window)
    expected = np.einsum("kc,cij->kij", mix.astype(np.float64), image.astype(np.float64))
    assert np.abs(got - expected).max() <= 1e-6


@pytest.mark.parametrize("shape", [(600, 600), (100, 70), (512, 384)])
def test_d4_on_the_host_through_the_engine(shape):
    image = _image(shape, seed=2)
    mix = _mix(2)
    got = _engine_blend(image, lambda b: np.einsum("kc,ncij->nkij", mix, b), 2, patch=64, overlap=0.5,
                        tta="d4")
    expected = np.einsum("kc,cij->kij", mix.astype(np.float64), image.astype(np.float64))
    assert np.abs(got - expected).max() <= 1e-6
