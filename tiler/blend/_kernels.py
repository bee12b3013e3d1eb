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
ngjit = numba.njit(nogil=True, cache=True, error_model="numpy")
pjit = numba.njit(nogil=True, cache=True, parallel=True, error_model="numpy")


@ngjit
def _blend_row(mean, weight, preds, window, y, c0, n, i, frac):  # pragma: no cover - jitted
    """Row i of patch n onto accumulator row y at column c0: W += w; m += (w / W)(p - m).

    Works on 1-D contiguous row slices so that LLVM vectorises both loops.
    """
    p = window.shape[1]
    weight_row = weight[y, c0:c0 + p]
    window_row = window[i]
    for j in range(p):
        w = window_row[j]
        total = weight_row[j] + w
        weight_row[j] = total
        frac[j] = w / total
    for k in range(mean.shape[0]):
        m_row = mean[k, y, c0:c0 + p]
        p_row = preds[n, k, i]
        for j in range(p):
            m = m_row[j]
            m_row[j] = m + frac[j] * (p_row[j] - m)


@ngjit
def _ring(row, head, height):  # pragma: no cover - jitted
    """Physical row of logical accumulator row ``row`` in a ring buffer starting at ``head``."""
    phys = row + head
    return phys - height if phys >= height else phys


@pjit
def accumulate_batch(mean, weight, preds, window, rows, cols, scratch, head):  # pragma: no cover - jitted
    """Blend a batch of patches into the running weighted mean.

    mean (K, H, W) f32, weight (H, W) f32 (the accumulator, a ring buffer of
    rows whose logical row 0 is physical row ``head``; updated in place);
    preds (N, K, P, P) f32; window (P, P) f32; rows, cols (N,) int64: each
    patch's upper-left position in logical accumulator pixels; scratch (H, P) f32.
    Per pixel, patches are applied in batch order: W += w; m += (w / W) (p - m).
    """
    n_patches, p = preds.shape[0], preds.shape[2]
    height = mean.shape[1]
    for y in numba.prange(height):
        frac = scratch[y]
        phys = _ring(y, head, height)
        for n in range(n_patches):
            i = y - rows[n]
            if i < 0 or i >= p:
                continue
            _blend_row(mean, weight, preds, window, phys, cols[n], n, i, frac)


@pjit
def emit_class(mean, valid, r0, c0, out, nodata, head):  # pragma: no cover - jitted
    """Argmax over classes of logical rows r0:r0+R, columns c0:c0+C of mean (a ring
    buffer starting at row ``head``) into out (R, C) uint8; nodata where not valid."""
    classes = mean.shape[0]
    for y in numba.prange(out.shape[0]):
        row = _ring(r0 + y, head, mean.shape[1])
        for x in range(out.shape[1]):
            if not valid[y, x]:
                out[y, x] = nodata
                continue
            best = 0
            best_v = mean[0, row, c0 + x]
            for k in range(1, classes):
                v = mean[k, row, c0 + x]
                if v > best_v:
                    best_v = v
                    best = k
            out[y, x] = best


@pjit
def emit_probability(mean, valid, r0, c0, out, nodata, head):  # pragma: no cover - jitted
    """Copy logical rows r0:r0+R, columns c0:c0+C of mean (a ring buffer starting at
    row ``head``) into out (K, R, C) f32; nodata where not valid."""
    width = out.shape[2]
    for y in numba.prange(out.shape[1]):
        v_row = valid[y]
        row = _ring(r0 + y, head, mean.shape[1])
        for k in range(out.shape[0]):
            o_row = out[k, y]
            m_row = mean[k, row, c0:c0 + width]
            for x in range(width):
                o_row[x] = m_row[x] if v_row[x] else nodata


#: Floor of a probability before the logarithm of the geometric TTA mean.
GEOMETRIC_EPSILON = np.float32(1e-7)

#: Side of the square tiles of the D4 gather: transposes walk one side with a
#: stride of a whole patch row, tiles keep both sides in cache.
D4_TILE = 32


@ngjit
def _d4_params(t, p):  # pragma: no cover - jitted
    """Affine index map of dihedral transform t on a (p, p) plane.

    Transform t (np.rot90 by t % 4 on the (row, col) axes, then a column
    mirror if t >= 4) reads ``out[i, j] = flat[base + i * di + j * dj]``.
    """
    r = t % 4
    last = p - 1
    if t < 4:
        if r == 0:
            return 0, p, 1
        if r == 1:
            return last, -1, p
        if r == 2:
            return p * p - 1, -p, -1
        return last * p, 1, -p
    if r == 0:
        return last, p, -1
    if r == 1:
        return p * p - 1, -1, -p
    if r == 2:
        return last * p, -p, 1
    return 0, 1, p


@ngjit
def _d4_inverse(t):  # pragma: no cover - jitted
    """Inverse transform: rotations invert to the opposite rotation, reflections to themselves."""
    return (4 - t) % 4 if t < 4 else t


@ngjit
def _gather(src, base, di, dj, dst, mode):  # pragma: no cover - jitted
    """dst[i, j] (=, +=, += log) src[base + i di + j dj], in cache-sized tiles.

    src is a flat (p * p,) plane, dst a (p, p) plane; mode 0 assigns, 1 adds,
    2 adds log(max(v, GEOMETRIC_EPSILON)).
    """
    p = dst.shape[0]
    for i0 in range(0, p, D4_TILE):
        i1 = min(p, i0 + D4_TILE)
        for j0 in range(0, p, D4_TILE):
            j1 = min(p, j0 + D4_TILE)
            for i in range(i0, i1):
                row = base + i * di
                for j in range(j0, j1):
                    v = src[row + j * dj]
                    if mode == 0:
                        dst[i, j] = v
                    elif mode == 1:
                        dst[i, j] += v
                    else:
                        dst[i, j] += np.log(max(v, GEOMETRIC_EPSILON))


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
        base, di, dj = _d4_params(t, p)
        for c in range(channels):
            _gather(batch[n, c].reshape(p * p), base, di, dj, out[tn, c], 0)


@pjit
def d4_merge(preds, transforms, geometric, out):  # pragma: no cover - jitted
    """Undo each dihedral transform and average: arithmetic or geometric mean.

    preds (T * N, K, P, P) predictions of the variants made by d4_expand;
    out (N, K, P, P). The geometric mean is exp(mean(log(max(p, GEOMETRIC_EPSILON)))),
    not renormalised here.
    """
    n_patches, classes, p = out.shape[0], out.shape[1], out.shape[2]
    n_t = transforms.shape[0]
    scale = np.float32(1.0) / np.float32(n_t)
    mode = 2 if geometric else 1
    for n in numba.prange(n_patches):
        for k in range(classes):
            plane = out[n, k]
            plane[:, :] = 0.0
            for t_index in range(n_t):
                base, di, dj = _d4_params(_d4_inverse(transforms[t_index]), p)
                _gather(preds[t_index * n_patches + n, k].reshape(p * p), base, di, dj, plane, mode)
            for i in range(p):
                for j in range(p):
                    if geometric:
                        plane[i, j] = np.exp(plane[i, j] * scale)
                    else:
                        plane[i, j] = plane[i, j] * scale
