"""The streaming engine against a definition-level NumPy blend, on the issue's grid of cases."""


import numpy as np
import pytest

from tests.reference import naive_blend
from tiler.blend import WINDOWS, get_window
from tiler.engine import PatchStats, stream
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
                  band_width=450, batch_size=7, **options):
    """Stream an in-memory image through the engine of `tiler run`; collect the emitted rows."""
    _, h, w = image.shape
    grid = PatchGrid.from_overlap(h, w, patch_size=patch, overlap=overlap)
    predictor = Predictor.from_network(network, classes, batch_size=batch_size, tta=tta)
    out = np.full((classes, h, w), np.nan, np.float32)

    def read(rows, cols):
        data = image[:, reflect_indices(*rows, h)][:, :, reflect_indices(*cols, w)]
        return data, np.ones(data.shape[1:], bool)

    for block in stream(read, grid, predictor, get_window(window, patch), strip_rows=strip_rows,
                        band_width=band_width, stats=PatchStats(), **options):
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


@pytest.mark.parametrize("prefetch, depth", [(False, 1), (True, 1), (True, 2), (True, 5)])
def test_network_stage_fills_batches_across_strips_and_changes_no_bit(prefetch, depth):
    """Batches are filled across patch rows, strips and column bands (one network call per
    batch_size patches, one short batch at the very end), and the threads and queue depth
    change no bit of the result (the accumulation order is the batches' order)."""
    image = _image((700, 530), seed=5)
    w = _mix(4)
    sizes = []

    def network(x):
        sizes.append(len(x))
        return np.einsum("kc,ncrs->nkrs", w, x)

    got = _engine_blend(image, network, 4, patch=64, overlap=0.5, strip_rows=90, band_width=200,
                        batch_size=5, prefetch=prefetch, depth=depth)
    grid = PatchGrid.from_overlap(700, 530, patch_size=64, overlap=0.5)
    cols = sum(len(b.patch_cols) for b in grid.column_bands(200))
    rows = sum(len(s.patch_rows) for s in grid.strips(90))
    total = rows * cols
    assert sizes == [5] * (total // 5) + ([total % 5] if total % 5 else [])
    reference = _engine_blend(image, lambda x: np.einsum("kc,ncrs->nkrs", w, x), 4, patch=64, overlap=0.5,
                              strip_rows=90, band_width=200, batch_size=1, prefetch=False)
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-6)
    if (prefetch, depth) != (False, 1):
        sequential = _engine_blend(image, network, 4, patch=64, overlap=0.5, strip_rows=90, band_width=200,
                                   batch_size=5, prefetch=False)
        np.testing.assert_array_equal(got, sequential)


def test_a_network_error_stops_the_stream_and_its_threads():
    """An exception in the network thread comes out of the stream; no thread is left running."""
    import threading

    calls = []

    def network(x):
        calls.append(len(x))
        if len(calls) == 3:
            raise RuntimeError("device lost")
        return np.zeros((len(x), 2) + x.shape[2:], np.float32)

    with pytest.raises(RuntimeError, match="device lost"):
        _engine_blend(_image((400, 400)), network, 2, patch=64, overlap=0.5, strip_rows=64, batch_size=2)
    assert len(calls) <= 3 + 2  # at most the queue depth ran on after the failure
    assert not [t for t in threading.enumerate() if t.name.startswith(("tiler-read", "tiler-network"))]


def test_network_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        _engine_blend(_image((100, 100)), lambda x: x[:, :1], 1, patch=64, overlap=0.5, depth=0)


def test_reflect_fill_mirrors_the_valid_neighbourhood():
    """Oracle: a pixel-by-pixel loop over the definition (tests/reference.py)."""
    from tests.reference import reflect_fill_candidates
    from tiler.engine import reflect_fill

    rng = np.random.default_rng(5)
    patch = rng.random((2, 24, 20)).astype(np.float32)
    valid = np.ones((24, 20), bool)
    valid[:, :6] = False
    valid[10:15, 9:13] = False
    valid[0, 19] = False
    got = reflect_fill(patch, valid)
    np.testing.assert_array_equal(got[:, valid], patch[:, valid])
    for (r, c), allowed in reflect_fill_candidates(patch, valid).items():
        assert any(np.array_equal(got[:, r, c], a) for a in allowed), (r, c)
    # column 4 is 2 px from the first valid column 6: it mirrors column 8, 2 px inside the data
    np.testing.assert_array_equal(got[:, 3:9, 4], patch[:, 3:9, 8])
    assert reflect_fill(patch, np.ones((24, 20), bool)) is patch


def test_a_finished_pass_frees_its_accumulators_without_the_cyclic_collector(monkeypatch):
    """Bounded memory (DESIGN invariant 4): once a pass is over, every accumulator it allocated is freed
    by reference counting alone. One kept alive by a reference cycle waits for Python's cyclic collector,
    which may not run for several passes (a run in parts grew by one accumulator a part)."""
    import gc
    import weakref

    import tiler.engine as engine

    made = []

    class Recorded(engine.Accumulator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(weakref.ref(self))

    monkeypatch.setattr(engine, "Accumulator", Recorded)
    network = lambda x: np.einsum("kc,ncrs->nkrs", _mix(2), x)  # noqa: E731
    enabled = gc.isenabled()
    gc.disable()
    try:
        for prefetch in (False, True):
            made.clear()
            _engine_blend(_image((300, 500)), network, 2, patch=64, overlap=0.5, strip_rows=100,
                          band_width=200, prefetch=prefetch)
            assert len(made) == 3  # one per column band
            assert [r() for r in made] == [None] * 3
    finally:
        if enabled:
            gc.enable()
