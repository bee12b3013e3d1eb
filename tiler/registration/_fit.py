"""Robust models of a displacement field measured on a grid of windows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Fit", "fit_translation", "fit_affine", "MAD_TO_SIGMA"]

#: Scale from the median absolute deviation to the standard deviation of a
#: normal distribution (1 / Phi^-1(3/4); Rousseeuw & Croux, JASA 88, 1993).
MAD_TO_SIGMA = 1.4826
#: Residuals beyond this many robust standard deviations are outliers.
OUTLIER_SIGMAS = 3.0
#: Rejection passes of the iterative fits.
_PASSES = 4
#: RANSAC trials for the affine start (random window triples), fixed seed so a
#: scene always gets the same answer.
RANSAC_TRIALS = 500
RANSAC_SEED = 0


@dataclass(frozen=True)
class Fit:
    """A displacement model fitted to window measurements.

    Attributes
    ----------
    kind : {"translation", "affine"}
    params : ndarray of shape (2, 3), float64
        ``d(u) = params @ [1, col, row]`` for the (row, col) displacement in
        reference pixels; the column and row terms are zero for a translation.
    inliers : ndarray of shape (window,), bool
    rms : float
        RMS of the inliers' residual vector lengths, reference pixels.
    """

    kind: str
    params: np.ndarray
    inliers: np.ndarray
    rms: float

    def predict(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Displacement ``(row, col)`` at reference pixel positions; shape (n, 2)."""
        design = np.stack([np.ones_like(rows, dtype=float), cols, rows], axis=1)
        return design @ self.params.T


def _rms(res: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum(res**2, axis=1)))) if len(res) else float("nan")


def _threshold(res: np.ndarray, floor: float) -> float:
    lengths = np.sqrt(np.sum(res**2, axis=1))
    mad = np.median(np.abs(lengths - np.median(lengths)))
    return max(OUTLIER_SIGMAS * MAD_TO_SIGMA * mad + np.median(lengths), floor)


def fit_translation(centres: np.ndarray, disp: np.ndarray, *, floor: float) -> Fit:
    """Robust mean displacement: median start, outliers rejected, mean of the rest.

    Parameters
    ----------
    centres : ndarray of shape (window, 2)
        Window centres ``(row, col)``, reference pixels (unused; for symmetry).
    disp : ndarray of shape (window, 2)
        Measured displacements ``(row, col)``, reference pixels.
    floor : float
        Residuals up to this length are never outliers (reference pixels).

    Returns
    -------
    Fit
    """
    # Consensus start: the measurement with most others within `floor`; a
    # plain median would follow the larger of two clusters (e.g. clouds).
    dist = np.sqrt(((disp[:, None, :] - disp[None, :, :]) ** 2).sum(axis=2))
    support = (dist <= floor).sum(axis=1)
    best = np.flatnonzero(support == support.max())
    pick = best[np.argmin(np.median(dist[best], axis=1))]
    inl = dist[pick] <= floor
    centre = disp[inl].mean(axis=0)
    for _ in range(_PASSES):
        res = disp - centre
        new = np.sqrt(np.sum(res**2, axis=1)) <= _threshold(res[inl], floor)
        if new.sum() == 0:
            break
        inl = new
        centre = disp[inl].mean(axis=0)
    params = np.zeros((2, 3))
    params[:, 0] = centre
    return Fit("translation", params, inl, _rms(disp[inl] - centre))


def fit_affine(centres: np.ndarray, disp: np.ndarray, *, floor: float) -> Fit:
    """Robust affine displacement field ``d = a + B (col, row)`` by iterated least squares.

    Parameters are as for :func:`fit_translation`. Starts from the largest
    set of windows that one affine explains within ``floor`` (RANSAC,
    :func:`skimage.measure.ransac`), then refits by least squares without the
    outliers of the previous pass.
    """
    design = np.stack([np.ones(len(centres)), centres[:, 1], centres[:, 0]], axis=1)
    inl = np.ones(len(disp), bool)
    if len(disp) > 3:
        # RANSAC start (Fischler & Bolles, CACM 24(6), 1981) on u -> u + d(u).
        src, dst = centres[:, ::-1], (centres + disp)[:, ::-1]
        from skimage.measure import ransac  # ~0.4 s to import: only where an affine is fitted
        from skimage.transform import AffineTransform

        _, found = ransac((src, dst), AffineTransform, min_samples=3, residual_threshold=floor,
                          max_trials=RANSAC_TRIALS, rng=RANSAC_SEED)
        if found is not None and found.sum() >= 3:
            inl = found
    params = np.zeros((2, 3))
    for _ in range(_PASSES):
        if inl.sum() < 3:
            break
        sol, *_ = np.linalg.lstsq(design[inl], disp[inl], rcond=None)
        params = sol.T
        res = disp - design @ sol
        new = np.sqrt(np.sum(res**2, axis=1)) <= _threshold(res[inl], floor)
        if (new == inl).all():
            break
        inl = new
    res = disp - design @ params.T
    return Fit("affine", params, inl, _rms(res[inl]))
