"""numba kernels == their plain-NumPy twins, across dtypes, odd sizes and edge patches."""

import subprocess
import sys

import numpy as np
import pytest

from tests.reference import (
    accumulate_twin,
    d4_twin,
    d4_untwin,
    emit_class_twin,
    emit_probability_twin,
)
from tiler.blend import Accumulator, d4_expand, d4_inverse, d4_merge, d4_transform, get_window
from tiler.errors import PlanError


def _batch(rng, n, k, p, height, width):
    preds = rng.random((n, k, p, p), dtype=np.float32)
    rows = rng.integers(0, height - p + 1, n)
    cols = rng.integers(0, width - p + 1, n)
    return preds, rows, cols


@pytest.mark.parametrize("k", [1, 3, 6])
@pytest.mark.parametrize("p", [1, 7, 16, 33])
@pytest.mark.parametrize("window", ["spline", "hann", "boxcar"])
def test_accumulate_matches_numpy_twin(k, p, window):
    rng = np.random.default_rng(k * 100 + p)
    height, width = p + 23, p + 41
    preds, rows, cols = _batch(rng, 40, k, p, height, width)
    w = get_window(window, p)
    acc = Accumulator(k, (-3, height - 3), (5, width + 5), w)
    acc.add_batch(preds[:25], rows[:25] - 3, cols[:25] + 5)
    acc.add_batch(preds[25:], rows[25:] - 3, cols[25:] + 5)
    mean = np.zeros((k, height, width), np.float32)
    weight = np.zeros((height, width), np.float32)
    accumulate_twin(mean, weight, preds, w, rows, cols)
    np.testing.assert_allclose(acc.mean, mean, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(acc.weight, weight)


@pytest.mark.parametrize("k", [1, 4])
def test_emit_kernels_match_numpy_twins(k):
    rng = np.random.default_rng(k)
    acc = Accumulator(k, (0, 30), (0, 40), np.ones((8, 8), np.float32))
    acc.mean[...] = rng.random(acc.mean.shape, dtype=np.float32)
    valid = rng.random((11, 17)) > 0.2
    cls = acc.emit_class((5, 16), (20, 37), valid, nodata=255)
    np.testing.assert_array_equal(cls, emit_class_twin(acc.mean, valid, 5, 20, (11, 17), 255))
    prob = acc.emit_probability((5, 16), (20, 37), valid)
    np.testing.assert_array_equal(prob, emit_probability_twin(acc.mean, valid, 5, 20, (11, 17), np.nan))
    with pytest.raises(PlanError, match="outside the accumulator"):
        acc.emit_class((25, 35), (0, 5), np.ones((10, 5), bool))


def test_argmax_ties_go_to_the_lower_class():
    acc = Accumulator(3, (0, 1), (0, 1), np.ones((1, 1), np.float32))
    acc.mean[:, 0, 0] = [0.2, 0.4, 0.4]
    assert acc.emit_class((0, 1), (0, 1), np.ones((1, 1), bool))[0, 0] == 1


@pytest.mark.parametrize("t", range(8))
@pytest.mark.parametrize("p", [1, 2, 5, 16])
def test_d4_expand_and_merge_match_rot90_twins(t, p):
    rng = np.random.default_rng(t)
    batch = rng.random((3, 2, p, p), dtype=np.float32)
    variants = d4_expand(batch, "d4")
    np.testing.assert_array_equal(variants[t * 3:(t + 1) * 3], d4_twin(batch, t))
    np.testing.assert_array_equal(d4_transform(batch, t), d4_twin(batch, t))
    np.testing.assert_array_equal(d4_inverse(d4_twin(batch, t), t), batch)


@pytest.mark.parametrize("mean", ["arithmetic", "geometric"])
@pytest.mark.parametrize("tta,ts", [("flip", (0, 4)), ("d4", tuple(range(8)))])
def test_d4_merge_undoes_each_transform_then_averages(mean, tta, ts):
    rng = np.random.default_rng(7)
    n, k, p = 4, 3, 9
    preds = rng.random((len(ts) * n, k, p, p), dtype=np.float32) + 0.01
    undone = np.stack([d4_untwin(preds[i * n:(i + 1) * n], t) for i, t in enumerate(ts)])
    if mean == "arithmetic":
        expected = undone.mean(axis=0)
    else:
        expected = np.exp(np.log(undone.astype(np.float64)).mean(axis=0))
    np.testing.assert_allclose(d4_merge(preds, tta, mean=mean), expected, rtol=2e-6, atol=1e-6)


def test_accumulator_roll_in_place_keeps_shared_rows():
    w = np.ones((8, 8), np.float32)
    acc = Accumulator(2, (-4, 12), (0, 8), w)
    acc.add_batch(np.stack([np.ones((2, 8, 8)), np.full((2, 8, 8), 3.0)]).astype(np.float32), [-4, 4], [0, 0])
    before = acc.normalised((4, 12), (0, 8))
    buffers = (acc.mean, acc.weight)
    acc.roll((4, 20))
    assert acc.rows == (4, 20) and acc.mean is buffers[0] and acc.weight is buffers[1]
    np.testing.assert_array_equal(acc.normalised((4, 12), (0, 8)), before)
    assert np.all(acc.weight_sum((12, 20), (0, 8)) == 0) and np.all(acc.normalised((12, 20), (0, 8)) == 0)
    # The ring wraps: blending and emitting across the seam works on logical rows.
    acc.add_batch(np.full((1, 2, 8, 8), 5.0, np.float32), [10], [0])
    acc.roll((8, 24))
    rows = acc.emit_probability((8, 18), (0, 8), np.ones((10, 8), bool))
    np.testing.assert_array_equal(rows[:, :2], before[:, 4:6])
    assert np.all(rows[:, 4:] == 5.0) and acc.head != 0
    np.testing.assert_array_equal(acc.emit_class((8, 18), (0, 8), np.ones((10, 8), bool)), np.argmax(rows, axis=0))


def test_patch_outside_the_accumulator_is_refused():
    acc = Accumulator(1, (0, 10), (0, 10), np.ones((4, 4), np.float32))
    with pytest.raises(PlanError, match="reaches outside"):
        acc.add_batch(np.zeros((1, 1, 4, 4), np.float32), [8], [0])


_DETERMINISM = r"""
import hashlib, numba, numpy as np, sys
numba.set_num_threads(int(sys.argv[1]))
from tiler.blend import Accumulator, get_window
rng = np.random.default_rng(0)
p = 32
acc = Accumulator(3, (0, 300), (0, 200), get_window("spline", p))
for _ in range(5):
    preds = rng.random((64, 3, p, p), dtype=np.float32)
    acc.add_batch(preds, rng.integers(0, 300 - p, 64), rng.integers(0, 200 - p, 64))
sys.stdout.write(hashlib.sha256(acc.mean.tobytes() + acc.weight.tobytes()).hexdigest())
"""


def test_kernels_are_bit_identical_whatever_the_thread_count():
    outs = set()
    for threads in (1, 2):
        proc = subprocess.run([sys.executable, "-c", _DETERMINISM, str(threads)], capture_output=True,
                              text=True, check=True)
        outs.add(proc.stdout)
    assert len(outs) == 1
