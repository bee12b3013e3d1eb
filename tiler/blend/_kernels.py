"""numba kernels of the blender. Private: call them through tiler.blend's wrappers.

Each kernel takes arrays and scalars only and writes into a preallocated output.
Parallel kernels split work by output row: every pixel is written by exactly
one thread, always in the same order, so results are bit-identical whatever
the thread count. No fastmath: the blend's exactness (a constant comes out
exactly constant) depends on IEEE division.

Every kernel has a plain-NumPy twin in ``tests/reference.py``.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["ngjit", "pjit", "accumulate_batch", "emit_class", "emit_probability",
           "d4_expand", "d4_merge"]

#: JIT flags, set in one place: compiled once per signature and cached on disk.
ngjit = numba.njit(nogil=True, cache=True)
pjit = numba.njit(nogil=True, cache=True, parallel=True)


@pjit
def accumulate_batch(mean, weight, preds, window, rows, cols, scratch):  # pragma: no cover - jitted
    """Blend a batch of patches into the running weighted mean.

    mean (K, H, W) f32, weight (H, W) f32 (the accumulator, updated in place);
    preds (N, K, P, P) f32; window (P, P) f32; rows, cols (N,) int64: each
    patch's upper-left position in accumulator pixels; scratch (H, P) f32.
    Per pixel, patches are applied in batch order: W += w; m += (w / W) (p - m).
    """
    n_patches, classes, p = preds.shape[0], preds.shape[1], preds.shape[2]
    height = mean.shape[1]
    for y in numba.prange(height):
        frac = scratch[y]
        for n in range(n_patches):
            i = y - rows[n]
            if i < 0 or i >= p:
                continue
            c0 = cols[n]
            for j in range(p):
                w = window[i, j]
                total = weight[y, c0 + j] + w
                weight[y, c0 + j] = total
                frac[j] = w / total
            for k in range(classes):
                for j in range(p):
                    m = mean[k, y, c0 + j]
                    mean[k, y, c0 + j] = m + frac[j] * (preds[n, k, i, j] - m)


@pjit
def emit_class(mean, valid, r0, c0, out, nodata):  # pragma: no cover - jitted
    """Argmax over classes of mean[:, r0:r0+R, c0:c0+C] into out (R, C) uint8; nodata where not valid."""
    classes = mean.shape[0]
    for y in numba.prange(out.shape[0]):
        for x in range(out.shape[1]):
            if not valid[y, x]:
                out[y, x] = nodata
                continue
            best = 0
            best_v = mean[0, r0 + y, c0 + x]
            for k in range(1, classes):
                v = mean[k, r0 + y, c0 + x]
                if v > best_v:
                    best_v = v
                    best = k
            out[y, x] = best


@pjit
def emit_probability(mean, valid, r0, c0, out, nodata):  # pragma: no cover - jitted
    """Copy mean[:, r0:r0+R, c0:c0+C] into out (K, R, C) f32; nodata where not valid."""
    classes = mean.shape[0]
    for y in numba.prange(out.shape[1]):
        for x in range(out.shape[2]):
            ok = valid[y, x]
            for k in range(classes):
                out[k, y, x] = mean[k, r0 + y, c0 + x] if ok else nodata


@ngjit
def _d4_source(t, i, j, p):  # pragma: no cover - jitted
    """Index in the original patch of pixel (i, j) of dihedral transform t.

    Transform t: rotate by t % 4 quarter turns counter-clockwise (np.rot90 on
    the (row, col) axes), then mirror the columns if t >= 4.
    """
    if t >= 4:
        j = p - 1 - j
    r = t % 4
    if r == 0:
        return i, j
    if r == 1:
        return j, p - 1 - i
    if r == 2:
        return p - 1 - i, p - 1 - j
    return p - 1 - j, i


@pjit
def d4_expand(batch, transforms, out):  # pragma: no cover - jitted
    """Dihedral variants of a batch of square patches.

    batch (N, C, P, P); transforms (T,) int64 in 0..7; out (T * N, C, P, P):
    out[t * N + n] = transform transforms[t] of batch[n].
    """
    n_patches, channels, p = batch.shape[0], batch.shape[1], batch.shape[2]
    for tn in numba.prange(transforms.shape[0] * n_patches):
        t = transforms[tn // n_patches]
        n = tn % n_patches
        for i in range(p):
            for j in range(p):
                si, sj = _d4_source(t, i, j, p)
                for c in range(channels):
                    out[tn, c, i, j] = batch[n, c, si, sj]


@pjit
def d4_merge(preds, transforms, geometric, eps, out):  # pragma: no cover - jitted
    """Undo each dihedral transform and average: arithmetic or geometric mean.

    preds (T * N, K, P, P) predictions of the variants made by d4_expand;
    out (N, K, P, P). Pixel (si, sj) of the original patch is pixel (i, j) of
    variant t. The geometric mean is exp(mean(log(max(p, eps)))), not
    renormalised here.
    """
    n_patches, classes, p = out.shape[0], out.shape[1], out.shape[2]
    n_t = transforms.shape[0]
    for n in numba.prange(n_patches):
        for k in range(classes):
            for i in range(p):
                for j in range(p):
                    out[n, k, i, j] = 0.0
        for t_index in range(n_t):
            t = transforms[t_index]
            src = t_index * n_patches + n
            for i in range(p):
                for j in range(p):
                    si, sj = _d4_source(t, i, j, p)
                    for k in range(classes):
                        v = preds[src, k, i, j]
                        if geometric:
                            out[n, k, si, sj] += np.log(max(v, eps))
                        else:
                            out[n, k, si, sj] += v
        scale = np.float32(1.0) / np.float32(n_t)
        for k in range(classes):
            for i in range(p):
                for j in range(p):
                    if geometric:
                        out[n, k, i, j] = np.exp(out[n, k, i, j] * scale)
                    else:
                        out[n, k, i, j] = out[n, k, i, j] * scale
