"""One window's displacement: phase correlation to the pixel, ECC to the sub-pixel, with its uncertainty."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["WindowFit", "estimate_window", "COARSE_UPSAMPLE", "SIGMA_FLOOR_PX"]

#: Phase-correlation upsampling of the coarse step: 1/10 pixel is more than the
#: refinement needs to start inside its basin of convergence.
COARSE_UPSAMPLE = 10
#: ECC stops after this many iterations or when the correlation gains less than ECC_EPS.
ECC_ITERATIONS = 100
ECC_EPS = 1e-6
#: The refinement may move the phase-correlation estimate by at most this many
#: pixels; further means it converged on another structure.
MAX_REFINEMENT_PX = 1.0
#: Least standard deviation (pixels) a window's estimate is given: the
#: curvature of a strongly textured window promises more than the spectral
#: difference between the compared bands allows.
SIGMA_FLOOR_PX = 0.02


@dataclass(frozen=True)
class WindowFit:
    """The displacement measured in one window, in the window's own pixels.

    Attributes
    ----------
    shift : ndarray of shape (2,), float64
        ``(row, col)`` offset of the group's content from the anchor's:
        ``group(x + shift) ~ gain * anchor(x) + bias``.
    covariance : ndarray of shape (2, 2), float64
        Covariance of ``shift`` from the least-squares curvature,
        ``sigma^2 (J^T J)^-1`` with ``sigma^2`` the residual variance (pixel
        noise assumed independent, so it understates correlated errors; the
        fit rescales it by the windows' observed scatter).
    coarse : ndarray of shape (2,), float64
        The phase-correlation estimate the refinement started from.
    correlation : float
        ECC's correlation coefficient at ``shift`` (normalised cross-correlation
        of the aligned windows).
    reason : str or None
        Why the window gave no estimate (then the other fields are NaN).
    """

    shift: np.ndarray
    covariance: np.ndarray
    coarse: np.ndarray
    correlation: float
    reason: Optional[str] = None


def _failed(reason: str, coarse=(math.nan, math.nan)) -> WindowFit:
    nan2 = np.full(2, np.nan)
    return WindowFit(nan2, np.full((2, 2), np.nan), np.asarray(coarse, float), math.nan, reason)


def _taper(n: int, m: int) -> np.ndarray:
    return np.outer(np.hanning(n), np.hanning(m))


def _curvature_covariance(anchor: np.ndarray, group: np.ndarray, valid: np.ndarray, shift: np.ndarray,
                          border: int) -> np.ndarray:
    """``sigma^2 (J^T J)^-1`` of the translation, gain and bias fitted at ``shift`` (Gauss-Newton curvature)."""
    import cv2

    height, width = anchor.shape
    warp = np.array([[1, 0, shift[1]], [0, 1, shift[0]]], np.float32)
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    size = (width, height)  # OpenCV's dsize is (columns, rows)
    moved = cv2.warpAffine(group.astype(np.float32), warp, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    ok = cv2.warpAffine(valid.astype(np.uint8), warp, size, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                        borderValue=0).astype(bool) & valid
    inner = np.zeros_like(ok)
    inner[border:height - border, border:width - border] = True
    ok &= inner
    gy, gx = np.gradient(moved.astype(np.float64))
    y = moved[ok].astype(np.float64)
    x = anchor[ok].astype(np.float64)
    design = np.stack([x, np.ones_like(x)], axis=1)
    (gain, bias), *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ (gain, bias)
    jac = np.stack([gy[ok], gx[ok], x, np.ones_like(x)], axis=1)
    dof = max(len(y) - 4, 1)
    sigma2 = float(residual @ residual) / dof
    try:
        cov = sigma2 * np.linalg.inv(jac.T @ jac)[:2, :2]
    except np.linalg.LinAlgError:
        return np.full((2, 2), np.inf)
    return cov + np.eye(2) * SIGMA_FLOOR_PX**2


def estimate_window(anchor: np.ndarray, group: np.ndarray, valid: np.ndarray, *,
                    upsample: int = COARSE_UPSAMPLE, max_shift: float) -> WindowFit:
    """Displacement of ``group``'s content against ``anchor`` in one window.

    Two steps: phase correlation (Guizar-Sicairos et al. 2008, via
    :func:`skimage.registration.phase_cross_correlation`) on Hann-tapered
    windows finds the shift robustly to a fraction of a pixel; the enhanced
    correlation coefficient maximisation (ECC; Evangelidis & Psarakis 2008,
    :func:`cv2.findTransformECC` with a translation model) refines it by
    least squares, invariant to gain and bias between the bands. The
    Dstl Satellite Imagery Feature Detection 3rd-place solution aligned its
    band groups with ECC the same way (Kaggle, 2017).

    Parameters
    ----------
    anchor, group : ndarray of shape (row, col), float
        The compared images on one grid (the coarser group's pixels).
    valid : ndarray of shape (row, col), bool
        Pixels valid on both sides; the rest is ignored by the refinement.
    upsample : int, default 10
        Phase-correlation precision, 1/upsample pixel.
    max_shift : float
        Larger coarse shifts (pixels) are rejected as implausible.

    Returns
    -------
    WindowFit
        With ``reason`` set when the window gave no estimate ("implausible
        shift", "refinement did not converge", "refinement left the
        correlation peak").
    """
    import cv2
    from skimage.registration import phase_cross_correlation

    # Zero mean and unit variance over the valid pixels: ECC works in float32,
    # where a large offset (raw counts ~3000 +- 80) swamps the texture.
    a = np.where(valid, (anchor - anchor[valid].mean()) / max(float(anchor[valid].std()), 1e-12), 0.0)
    g = np.where(valid, (group - group[valid].mean()) / max(float(group[valid].std()), 1e-12), 0.0)
    fill_a = fill_g = 0.0
    # phase_cross_correlation returns the shift registering `g` onto `a`: the
    # group's content sits at minus that shift.
    if valid.all():
        taper = _taper(*a.shape)
        shift, _, _ = phase_cross_correlation((a - fill_a) * taper, (g - fill_g) * taper, upsample_factor=upsample,
                                              normalization="phase")
    else:
        # Masked normalised cross-correlation (Padfield, IEEE TIP 21(5), 2012): the
        # edge of an invalid area is in both images and would pull plain phase
        # correlation to zero shift. Whole pixels; the refinement does the rest.
        shift, _, _ = phase_cross_correlation(a, g, reference_mask=valid, moving_mask=valid)
    coarse = -np.asarray(shift, float)
    if math.hypot(*coarse) > max_shift:
        return _failed("implausible shift", coarse)
    warp = np.array([[1, 0, coarse[1]], [0, 1, coarse[0]]], np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ECC_ITERATIONS, ECC_EPS)
    try:
        rho, warp = cv2.findTransformECC(a.astype(np.float32), g.astype(np.float32), warp, cv2.MOTION_TRANSLATION,
                                         criteria, valid.astype(np.uint8), 1)
    except cv2.error:
        return _failed("refinement did not converge", coarse)
    fine = np.array([warp[1, 2], warp[0, 2]], float)
    if not np.all(np.isfinite(fine)) or np.abs(fine - coarse).max() > MAX_REFINEMENT_PX:
        return _failed("refinement left the correlation peak", coarse)
    border = int(math.ceil(np.abs(fine).max())) + 2
    cov = _curvature_covariance(a, g, valid, fine, border)
    return WindowFit(fine, cov, coarse, float(rho))
