"""Weighted robust models of a displacement field measured on a grid of windows, and the choice between them."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

__all__ = ["Fit", "fit_translation", "fit_affine", "select_model", "ModelChoice", "MAD_TO_SIGMA",
           "OUTLIER_CHI2", "AFFINE_P_VALUE", "AFFINE_MIN_WINDOWS", "AFFINE_MIN_EFFECT_PX"]

#: Scale from the median absolute deviation to the standard deviation of a
#: normal distribution (1 / Phi^-1(3/4); Rousseeuw & Croux, JASA 88, 1993).
MAD_TO_SIGMA = 1.4826
#: A window is an outlier when its squared normalised residual exceeds the
#: 99.9 % point of the chi-square distribution with 2 degrees of freedom
#: (-2 ln 0.001 = 13.82) ...
OUTLIER_CHI2 = -2.0 * math.log(1e-3)
#: ... after dividing by the median of the inliers' squared normalised
#: residuals over that distribution's median (2 ln 2): a robust rescaling of
#: the windows' uncertainties to their observed scatter.
_CHI2_2_MEDIAN = 2.0 * math.log(2.0)
#: Rejection passes of the iterative fits.
_PASSES = 6
#: RANSAC trials for the affine start (random window triples), fixed seed so a
#: scene always gets the same answer.
RANSAC_TRIALS = 500
RANSAC_SEED = 0
#: The affine model is chosen over the translation only when the F-test of the
#: extra 4 parameters on the weighted residuals rejects the translation at
#: this level ...
AFFINE_P_VALUE = 1e-3
#: ... on at least this many windows ...
AFFINE_MIN_WINDOWS = 6
#: ... and the affine moves the windows by more than this RMS (pixels of the
#: compared grid) from the translation: a significant but negligible variation
#: is not worth the model.
AFFINE_MIN_EFFECT_PX = 0.2


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
    chi2 : float
        Sum of the inliers' squared residuals weighted by their inverse
        covariances (unweighted when no covariances were given).
    dof : int
        ``2 * inliers - parameters``.
    scale : float
        Reduced chi-square ``chi2 / dof`` (the Birge ratio squared): how much
        larger the scatter is than the windows' own uncertainties say.
    shift_sigma : ndarray of shape (2,), float64
        Standard deviation of the constant term ``params[:, 0]`` (reference
        pixels), from the weighted least squares scaled by ``max(scale, 1)``.
    """

    kind: str
    params: np.ndarray
    inliers: np.ndarray
    rms: float
    chi2: float = math.nan
    dof: int = 0
    scale: float = math.nan
    shift_sigma: np.ndarray = field(default_factory=lambda: np.full(2, math.nan))

    def predict(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Displacement ``(row, col)`` at reference pixel positions; shape (n, 2)."""
        design = np.stack([np.ones_like(rows, dtype=float), cols, rows], axis=1)
        return design @ self.params.T


def _design(centres: np.ndarray, kind: str) -> np.ndarray:
    """Per-window design ``X_i`` of shape (n, 2, p): ``d_i = X_i @ p``."""
    n = len(centres)
    if kind == "translation":
        return np.broadcast_to(np.eye(2), (n, 2, 2)).copy()
    x = np.stack([np.ones(n), centres[:, 1], centres[:, 0]], axis=1)
    design = np.zeros((n, 2, 6))
    design[:, 0, :3] = x
    design[:, 1, 3:] = x
    return design


def _whiteners(cov: np.ndarray) -> np.ndarray:
    """``L_i`` with ``L_i^T L_i = cov_i^-1`` (so ``|L_i r|^2 = r^T cov_i^-1 r``)."""
    return np.stack([np.linalg.cholesky(np.linalg.inv(c)).T for c in cov])


def _solve(design: np.ndarray, disp: np.ndarray, white: np.ndarray, inl: np.ndarray):
    """Weighted least squares on the inliers: parameters, their covariance and the chi-square."""
    a = np.einsum("nij,njp->nip", white[inl], design[inl]).reshape(-1, design.shape[2])
    b = np.einsum("nij,nj->ni", white[inl], disp[inl]).reshape(-1)
    p, *_ = np.linalg.lstsq(a, b, rcond=None)
    r = b - a @ p
    try:
        pcov = np.linalg.inv(a.T @ a)
    except np.linalg.LinAlgError:
        pcov = np.full((len(p), len(p)), np.inf)
    return p, pcov, float(r @ r)


def _params(p: np.ndarray, kind: str) -> np.ndarray:
    params = np.zeros((2, 3))
    if kind == "translation":
        params[:, 0] = p
    else:
        params[:] = p.reshape(2, 3)
    return params


def _residuals(design, disp, p):
    return disp - np.einsum("nip,p->ni", design, p)


def _robust(kind: str, centres: np.ndarray, disp: np.ndarray, cov: np.ndarray, inl: np.ndarray,
            floor: float, *, passes: int = _PASSES) -> Fit:
    design, white = _design(centres, kind), _whiteners(cov)
    npar = design.shape[2]
    for _ in range(passes):
        if inl.sum() * 2 <= npar:
            break
        p, _, _ = _solve(design, disp, white, inl)
        res = _residuals(design, disp, p)
        z2 = np.einsum("nij,nj->ni", white, res)
        z2 = (z2**2).sum(axis=1)
        k = max(float(np.median(z2[inl])) / _CHI2_2_MEDIAN, 1e-12)
        new = (z2 / k <= OUTLIER_CHI2) | (np.hypot(*res.T) <= floor)
        if (new == inl).all() or new.sum() * 2 <= npar:
            break
        inl = new
    if inl.sum() * 2 <= npar:
        return Fit(kind, np.zeros((2, 3)), inl, math.nan)
    p, pcov, chi2 = _solve(design, disp, white, inl)
    res = _residuals(design, disp, p)
    dof = int(2 * inl.sum() - npar)
    scale = chi2 / dof if dof > 0 else math.nan
    inflate = max(scale, 1.0) if dof > 0 else math.inf
    sig = np.sqrt(np.diag(pcov) * inflate)
    shift_sigma = sig[:2] if kind == "translation" else sig[[0, 3]]
    rms = float(np.sqrt(np.mean(np.sum(res[inl] ** 2, axis=1))))
    return Fit(kind, _params(p, kind), inl, rms, chi2, dof, scale, shift_sigma)


def _covariances(disp: np.ndarray, cov: Optional[np.ndarray]) -> np.ndarray:
    if cov is None:
        return np.broadcast_to(np.eye(2), (len(disp), 2, 2)).copy()
    return np.asarray(cov, float)


def fit_translation(centres: np.ndarray, disp: np.ndarray, *, floor: float,
                    cov: Optional[np.ndarray] = None) -> Fit:
    """Robust weighted mean displacement: consensus start, outliers rejected, weighted mean of the rest.

    Parameters
    ----------
    centres : ndarray of shape (window, 2)
        Window centres ``(row, col)``, reference pixels (unused; for symmetry).
    disp : ndarray of shape (window, 2)
        Measured displacements ``(row, col)``, reference pixels.
    floor : float
        Residuals up to this length are never outliers (reference pixels).
    cov : ndarray of shape (window, 2, 2), optional
        Covariance of each measurement (reference pixels squared); the fit
        weights by its inverse. Default: equal weights.

    Returns
    -------
    Fit
        Outliers: squared normalised residual above :data:`OUTLIER_CHI2` after
        robust rescaling, and longer than ``floor``.
    """
    # Consensus start: the measurement with most others within `floor`; a
    # plain median would follow the larger of two clusters (e.g. clouds).
    dist = np.sqrt(((disp[:, None, :] - disp[None, :, :]) ** 2).sum(axis=2))
    support = (dist <= max(floor, 1e-9)).sum(axis=1)
    best = np.flatnonzero(support == support.max())
    pick = best[np.argmin(np.median(dist[best], axis=1))]
    inl = dist[pick] <= max(floor, 1e-9)
    return _robust("translation", centres, disp, _covariances(disp, cov), inl, floor)


def fit_affine(centres: np.ndarray, disp: np.ndarray, *, floor: float,
               cov: Optional[np.ndarray] = None) -> Fit:
    """Robust weighted affine displacement field ``d = a + B (col, row)``.

    Parameters are as for :func:`fit_translation`. Starts from the largest
    set of windows that one affine explains within ``floor`` (RANSAC,
    Fischler & Bolles, CACM 24(6), 1981, via :func:`skimage.measure.ransac`
    with a fixed seed), then refits by weighted least squares without the
    outliers of the previous pass. Where RANSAC finds no consensus (its
    "No inliers found" warning is caught), the fit starts from all windows.
    """
    inl = np.ones(len(disp), bool)
    if len(disp) > 3:
        src, dst = centres[:, ::-1], (centres + disp)[:, ::-1]
        from skimage.measure import ransac  # ~0.4 s to import: only where an affine is fitted
        from skimage.transform import AffineTransform

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "No inliers found": handled below
            _, found = ransac((src, dst), AffineTransform, min_samples=3, residual_threshold=max(floor, 1e-9),
                              max_trials=RANSAC_TRIALS, rng=RANSAC_SEED)
        if found is not None and found.sum() >= 3:
            inl = np.asarray(found, bool)
    return _robust("affine", centres, disp, _covariances(disp, cov), inl, floor)


@dataclass(frozen=True)
class ModelChoice:
    """The displacement model chosen for a group, and why.

    Attributes
    ----------
    fit : Fit
    reason : str
        One sentence, e.g. ``"translation: the affine explains no more than
        the windows' noise (F(4, 12) = 1.3, p = 0.32)"``.
    f_stat, p_value : float
        The F-test of the affine's 4 extra parameters (NaN when not run).
    effect : float
        RMS over the compared windows of the affine's displacement minus the
        translation's (reference pixels; NaN when not run).
    """

    fit: Fit
    reason: str
    f_stat: float = math.nan
    p_value: float = math.nan
    effect: float = math.nan


def select_model(centres: np.ndarray, disp: np.ndarray, cov: np.ndarray, *, floor: float, model: str,
                 px: float = 1.0) -> tuple[Optional[ModelChoice], Optional[str]]:
    """Fit the requested model, or choose between translation and affine (``auto``).

    ``auto`` takes the affine only when (1) at least
    :data:`AFFINE_MIN_WINDOWS` windows agree on it; (2)
    on the translation's windows (the affine's where those are too few) the
    F-test of its 4 extra parameters on the weighted
    residuals, ``F = ((chi2_t - chi2_a) / 4) / (chi2_a / (2n - 6))`` with
    (4, 2n - 6) degrees of freedom, rejects the translation at
    :data:`AFFINE_P_VALUE`; and (3) it moves the windows by more than
    :data:`AFFINE_MIN_EFFECT_PX` compared pixels RMS from the translation.
    The F-test is independent of the overall scale of the windows'
    uncertainties, which the curvature understates. Deterministic: the
    RANSAC start has a fixed seed.

    Parameters
    ----------
    centres, disp : ndarray of shape (window, 2)
        Window centres and displacements ``(row, col)``, reference pixels.
    cov : ndarray of shape (window, 2, 2)
        Their covariances, reference pixels squared.
    floor : float
        Residuals up to this length are never outliers (reference pixels).
    model : {"auto", "translation", "affine"}
    px : float, default 1.0
        Reference pixels per compared pixel (for the effect threshold).

    Returns
    -------
    choice : ModelChoice or None
        None when the requested affine cannot be fitted.
    failure : str or None
        Why the requested model could not be fitted.
    """
    trans = fit_translation(centres, disp, floor=floor, cov=cov)
    if model == "translation":
        return ModelChoice(trans, "translation: requested"), None
    aff = fit_affine(centres, disp, floor=floor, cov=cov)
    n_aff = int(aff.inliers.sum())
    if model == "affine":
        if n_aff < AFFINE_MIN_WINDOWS or not math.isfinite(aff.rms):
            return None, (f"the affine model needs {AFFINE_MIN_WINDOWS} agreeing windows, {n_aff} agree; "
                          "use the translation model")
        return ModelChoice(aff, "affine: requested"), None
    if n_aff < AFFINE_MIN_WINDOWS or not math.isfinite(aff.rms):
        return ModelChoice(trans, f"translation: the affine needs {AFFINE_MIN_WINDOWS} agreeing windows, "
                                  f"{n_aff} agree"), None
    # Both models on the translation's windows (no rejection): nested, so the
    # F-test applies; an affine that bends to take in windows the translation
    # rejects (cloud parallax in one corner) gains nothing there. Where the
    # translation explains too few windows for the test, the affine's windows.
    same = trans.inliers if trans.inliers.sum() >= AFFINE_MIN_WINDOWS else aff.inliers
    t_same = _robust("translation", centres, disp, cov, same.copy(), floor, passes=0)
    a_same = _robust("affine", centres, disp, cov, same.copy(), floor, passes=0)
    dof = 2 * int(same.sum()) - 6
    f_stat = ((t_same.chi2 - a_same.chi2) / 4.0) / (a_same.chi2 / dof) if a_same.chi2 > 0 else math.inf
    from scipy.stats import f as f_dist

    p_value = float(f_dist.sf(f_stat, 4, dof)) if math.isfinite(f_stat) else 0.0
    # The effect: how far the affine moves its own windows from the translation.
    at = aff.inliers
    diff = aff.predict(centres[at, 0], centres[at, 1]) - t_same.params[:, 0]
    effect = float(np.sqrt(np.mean(np.sum(diff**2, axis=1))))
    stats = f"F(4, {dof}) = {f_stat:.3g}, p = {p_value:.2g}"
    if p_value >= AFFINE_P_VALUE:
        return ModelChoice(trans, f"translation: the affine explains no more than the windows' noise ({stats})",
                           f_stat, p_value, effect), None
    if effect <= AFFINE_MIN_EFFECT_PX * px:
        return ModelChoice(trans, f"translation: the affine is significant ({stats}) but moves the windows by "
                                  f"only {effect / px:.3f} px RMS (<= {AFFINE_MIN_EFFECT_PX})",
                           f_stat, p_value, effect), None
    return ModelChoice(aff, f"affine: the shift varies across the scene by {effect / px:.2f} px RMS ({stats} "
                            f"< {AFFINE_P_VALUE:g})", f_stat, p_value, effect), None
