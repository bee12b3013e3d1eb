"""Estimating each band group's misalignment: phase correlation refined by ECC on windows that fit the scene."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
from affine import Affine

from tiler.errors import RegistrationError
from tiler.registration._estimate import COARSE_UPSAMPLE, estimate_window
from tiler.registration._fit import select_model
from tiler.registration._match import BandMatch, match_bands
from tiler.registration._windows import MIN_WINDOW, CloudScreen, detect_fill, window_layout
from tiler.scene import Scene

__all__ = ["WindowEstimate", "GroupRegistration", "Registration", "register_scene", "MODELS",
           "DEFAULT_GRID", "DEFAULT_WINDOW", "DEFAULT_UPSAMPLE", "MIN_PEAK", "MIN_WINDOWS"]

log = logging.getLogger(__name__)

#: Displacement models: ``auto`` picks affine only where it explains the
#: windows significantly and materially better than a translation
#: (:func:`tiler.registration.select_model`).
MODELS = ("auto", "translation", "affine")
#: Most windows per side of the estimation grid (a bounded number of reads,
#: whatever the scene size); fewer where they would overlap by more than half.
DEFAULT_GRID = 8
#: Largest window side in pixels of the coarser group of a pair; at most half
#: the shorter side of that group's grid, at least MIN_WINDOW.
DEFAULT_WINDOW = 128
#: Phase-correlation upsampling of the coarse step (1/10 pixel); the ECC
#: refinement gives the sub-pixel estimate.
DEFAULT_UPSAMPLE = COARSE_UPSAMPLE
#: Windows whose normalised cross-correlation after alignment is below this
#: are rejected as unreliable.
MIN_PEAK = 0.3
#: Windows whose peak falls this far below the median peak of the measured
#: windows are rejected: a surface that moves between the bands' acquisition
#: times (sea state, smoke, cloud) correlates worse than static ground, and its
#: shift is not the sensor's (0.1: the open sea of the shared Sentinel-2 scene
#: peaks at 0.7-0.88 where its land peaks at 0.99).
PEAK_MARGIN = 0.1
#: Fewest usable windows for a result.
MIN_WINDOWS = 3
#: Usable fraction of valid (not nodata, not cloud) pixels in a window; the
#: refinement ignores the invalid rest.
MIN_VALID_FRACTION = 0.75
#: A window whose standard deviation is below this fraction of its mean
#: magnitude has no texture to correlate.
MIN_RELATIVE_STD = 0.01
#: Shifts beyond this fraction of the window side are implausible.
MAX_SHIFT_FRACTION = 0.25
#: Residuals below this (pixels of the coarser group) are never outliers.
OUTLIER_FLOOR_PX = 0.1
#: Chain through an intermediate group when its spectral gap is smaller than
#: the reference's by at least this much (nm).
CHAIN_GAIN_NM = 100.0


@dataclass(frozen=True)
class WindowEstimate:
    """One estimation window.

    Attributes
    ----------
    row, col : float
        Window centre, reference pixels.
    displacement : tuple of float
        ``(row, col)`` offset of the group's content from the anchor's,
        reference pixels (NaN when not measured).
    peak : float
        Normalised cross-correlation after alignment (NaN when not measured).
    correlation_before : float
        Normalised cross-correlation before alignment.
    reason : str or None
        Why the window was rejected; None when used.
    sigma : tuple of float
        ``(row, col)`` standard deviation of ``displacement`` from the
        refinement's residual and curvature, reference pixels (NaN when not
        measured).
    """

    row: float
    col: float
    displacement: tuple[float, float]
    peak: float
    correlation_before: float
    reason: Optional[str] = None
    sigma: tuple[float, float] = (math.nan, math.nan)


@dataclass(frozen=True)
class GroupRegistration:
    """The registration of one band group against its anchor.

    Attributes
    ----------
    group, anchor : str
    status : {"ok", "failed", "reference", "skipped"}
    reason : str or None
        Why it failed or was skipped.
    model : {"translation", "affine"} or None
    correction : affine.Affine
        Reference pixel position where the group is placed -> where it
        belongs (see :meth:`tiler.scene.Scene.set_correction`).
    match : str
        The bands compared, e.g. ``"mean(green, red) ~ pan"``.
    compared_pixel_size : float
        Pixel size of the comparison grid (the coarser group), reference units.
    shift_reference_px, shift_group_px : tuple of float
        ``(row, col)`` misalignment at the scene centre, in reference pixels
        and in pixels of the group; the correction moves the group by minus
        this.
    shift_m : tuple of float or None
        The same in CRS units (metres), None without georeferencing.
    windows_used : int
    rejected : dict of str to int
        Rejected windows per reason.
    residual_rms : float
        RMS of the used windows' residuals from the model, reference pixels.
    seconds : float
    windows : tuple of WindowEstimate
    model_reason : str
        Why the model was chosen (the F-test, or what was requested).
    shift_sigma_group_px : tuple of float
        ``(row, col)`` standard deviation of the shift, pixels of the group.
    window_size : int
        Window side, pixels of the compared grid.
    window_grid : tuple of int
        Windows per column and per row.
    cloud_screen : str
        What screened clouds (the product's mask, a reflectance threshold, or
        none and why).
    notes : tuple of str
        What was assumed (undeclared fill treated as nodata, a shrunk window).
    """

    group: str
    anchor: Optional[str]
    status: str
    reason: Optional[str] = None
    model: Optional[str] = None
    correction: Affine = Affine.identity()
    match: str = ""
    compared_pixel_size: float = float("nan")
    shift_reference_px: tuple[float, float] = (0.0, 0.0)
    shift_group_px: tuple[float, float] = (0.0, 0.0)
    shift_m: Optional[tuple[float, float]] = None
    windows_used: int = 0
    rejected: dict = field(default_factory=dict)
    residual_rms: float = float("nan")
    seconds: float = 0.0
    windows: tuple[WindowEstimate, ...] = ()
    model_reason: str = ""
    shift_sigma_group_px: tuple[float, float] = (math.nan, math.nan)
    window_size: int = 0
    window_grid: tuple[int, int] = (0, 0)
    cloud_screen: str = ""
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (windows included)."""
        def r(v, nd=4):
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), nd)
        return {
            "group": self.group, "anchor": self.anchor, "status": self.status, "reason": self.reason,
            "model": self.model, "correction": [r(v, 9) for v in list(self.correction)[:6]],
            "match": self.match, "compared_pixel_size": r(self.compared_pixel_size),
            "shift_reference_px": [r(v) for v in self.shift_reference_px],
            "shift_group_px": [r(v) for v in self.shift_group_px],
            "shift_m": None if self.shift_m is None else [r(v) for v in self.shift_m],
            "windows_used": self.windows_used, "windows_rejected": dict(self.rejected),
            "residual_rms_reference_px": r(self.residual_rms), "seconds": r(self.seconds, 3),
            "model_reason": self.model_reason, "shift_sigma_group_px": [r(v) for v in self.shift_sigma_group_px],
            "window_size": self.window_size, "window_grid": list(self.window_grid),
            "cloud_screen": self.cloud_screen, "notes": list(self.notes),
            "windows": [{"row": r(w.row, 1), "col": r(w.col, 1),
                         "displacement": [r(v) for v in w.displacement], "sigma": [r(v) for v in w.sigma],
                         "peak": r(w.peak), "correlation_before": r(w.correlation_before), "reason": w.reason}
                        for w in self.windows],
        }


@dataclass(frozen=True)
class Registration:
    """Registration of every band group of a scene.

    Attributes
    ----------
    reference : str
    groups : dict of str to GroupRegistration
    seconds : float
    """

    reference: str
    groups: dict[str, GroupRegistration]
    seconds: float = 0.0

    @property
    def failures(self) -> list[GroupRegistration]:
        """Groups whose estimate failed."""
        return [g for g in self.groups.values() if g.status == "failed"]

    def failure_message(self, fix: str) -> str:
        """One sentence naming each failed group, its anchor and its reason once, then ``fix``."""
        details = "; ".join(f"group {g.group!r} against {g.anchor!r}: {g.reason}" for g in self.failures)
        return f"registration failed: {details}. {fix}"

    def apply(self, scene: Scene, *, strict: bool = True) -> None:
        """Set every successful group's correction on ``scene``.

        Parameters
        ----------
        scene : Scene
        strict : bool, default True
            Refuse when a group failed; False: a failed group keeps the place its georeferencing gives it.

        Raises
        ------
        RegistrationError
            If a group failed and ``strict``; the message gives each reason and the fix.
        """
        if self.failures and strict:
            raise RegistrationError(self.failure_message(
                "Check the scene (clouds, nodata, wrong band names), or pass --registration off to proceed with "
                "the groups placed by their georeferencing only"))
        for g in self.groups.values():
            if g.status == "ok":
                scene.set_correction(g.group, g.correction)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"reference": self.reference, "seconds": round(self.seconds, 3),
                "groups": {k: v.to_dict() for k, v in self.groups.items()}}


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


def _choose_anchor(scene: Scene, name: str, done: dict[str, GroupRegistration]) -> tuple[str, BandMatch]:
    group = scene.group(name)
    if group.anchor is not None:
        scene.group(group.anchor)
        return group.anchor, match_bands(group, scene.group(group.anchor))
    ref_match = match_bands(group, scene.group(scene.reference))
    best = (scene.reference, ref_match)
    for other, reg in done.items():
        if reg.status != "ok" or other == scene.reference:
            continue
        m = match_bands(group, scene.group(other))
        if m.gap_nm is not None and ref_match.gap_nm is not None and m.gap_nm <= ref_match.gap_nm - CHAIN_GAIN_NM \
                and m.gap_nm < (best[1].gap_nm or math.inf):
            best = (other, m)
    return best


def _order(scene: Scene, names: Sequence[str]) -> list[str]:
    """Groups nearest the reference first, so that chains find their intermediate done."""
    ref = scene.group(scene.reference)

    def key(n: str) -> float:
        g = scene.group(n)
        if g.anchor is not None:
            return math.inf if g.anchor != scene.reference else 0.0
        gap = match_bands(g, ref).gap_nm
        return math.inf if gap is None else gap
    return sorted(names, key=key)


def _rejections(estimates: Sequence[WindowEstimate]) -> dict[str, int]:
    rejected: dict[str, int] = {}
    for e in estimates:
        if e.reason:
            rejected[e.reason] = rejected.get(e.reason, 0) + 1
    return rejected


def _register_group(scene: Scene, name: str, anchor: str, match: BandMatch, *, model: str, grid_n: int,
                    window: int, upsample: int, min_peak: float, memo: dict) -> GroupRegistration:
    """Register one group against its anchor; ``memo`` keeps whole-scene reads (fill, cloud statistics)
    shared by the groups of one :func:`register_scene` call (the reference is every group's anchor)."""
    t0 = time.perf_counter()
    g_grid, a_grid = scene.grid(name), scene.grid(anchor)
    coarse = name if g_grid.pixel_size >= a_grid.pixel_size else anchor
    c_grid = scene.grid(coarse)
    px = c_grid.pixel_size
    common: dict[str, Any] = dict(group=name, anchor=anchor, match=match.describe(scene.group(name),
                                                                                 scene.group(anchor)),
                                  compared_pixel_size=px)
    layout, layout_note = window_layout(c_grid.height, c_grid.width, window=window, grid=grid_n)
    if layout is None:
        where = "" if coarse == name else f" (on the grid of group {coarse!r}, the coarser one)"
        return GroupRegistration(status="failed", reason=f"{layout_note}{where}",
                                 seconds=time.perf_counter() - t0, **common)
    size = layout.size
    notes = [layout_note] if layout_note else []
    # Undeclared fill (zeros in every band at the scene's edges ...) is nodata here.
    fills = {}
    for side in dict.fromkeys((name, anchor)):
        if ("fill", side) not in memo:
            memo["fill", side] = detect_fill(scene, side)
        found = memo["fill", side]
        if found is not None:
            fills[side] = found[0]
            notes.append(f"group {side!r}: {found[1]:.1%} of the scene is {found[0]:g} in every band and not "
                         "declared nodata; treated as nodata for registration (declare nodata to be sure)")
            log.info("registration %s", notes[-1])
    coarse_t = scene.source_transform(coarse, corrected=coarse != name)
    ref_inv_lin = ~Affine(scene.transform.a, scene.transform.b, 0, scene.transform.d, scene.transform.e, 0)
    to_ref = ref_inv_lin @ Affine(coarse_t.a, coarse_t.b, 0, coarse_t.d, coarse_t.e, 0)

    def resampling(group_name: str) -> Optional[str]:
        # Area-average the finer side onto the coarser grid, never point-sample.
        return "average" if scene.grid(group_name).pixel_size < px * (1 - 1e-9) else None

    for side, value in fills.items():
        scene.assume_fill(side, value)
    try:
        screen = CloudScreen(scene, (anchor, name), memo=memo)
        estimates = [_window(scene, name, anchor, match, coarse_t @ Affine.translation(c0, r0), size, screen,
                             resampling, to_ref, upsample, min_peak) for r0, c0 in layout.origins]
    finally:
        for side in fills:
            scene.assume_fill(side, None)
    common.update(window_size=size, window_grid=layout.shape, cloud_screen=screen.source, notes=tuple(notes))

    measured = [e.peak for e in estimates if e.reason is None]
    weak = float(np.median(measured)) - PEAK_MARGIN if measured else 0.0
    estimates = [_replace_reason(e, "weak peak (moving surface or haze)") if e.reason is None and e.peak < weak
                 else e for e in estimates]
    used = [k for k, e in enumerate(estimates) if e.reason is None]
    if len(used) < MIN_WINDOWS:
        rejected = _rejections(estimates)
        why = ", ".join(f"{n} {k}" for k, n in sorted(rejected.items()))
        why = f"; rejected: {why}" if why else f"; the {c_grid.width} x {c_grid.height} px grid holds {len(estimates)}"
        return GroupRegistration(
            status="failed", reason=f"{len(used)} of {len(estimates)} windows usable{why}; need {MIN_WINDOWS} "
                                    f"(try a smaller --registration-window, at least {MIN_WINDOW})",
            rejected=rejected, windows=tuple(estimates), seconds=time.perf_counter() - t0, **common)

    centres = np.array([(estimates[k].row, estimates[k].col) for k in used])
    disps = np.array([estimates[k].displacement for k in used])
    covs = np.array([_ref_cov(estimates[k].sigma) for k in used])
    ref_per_coarse = px / scene.grid(scene.reference).pixel_size
    choice, failure = select_model(centres, disps, covs, floor=OUTLIER_FLOOR_PX * ref_per_coarse, model=model,
                                   px=ref_per_coarse)
    if choice is None:
        return GroupRegistration(status="failed", reason=failure, rejected=_rejections(estimates),
                                 windows=tuple(estimates), seconds=time.perf_counter() - t0, **common)
    fit = choice.fit
    for j, k in enumerate(used):
        if not fit.inliers[j]:
            estimates[k] = _replace_reason(estimates[k], "outlier (disagrees with the other windows)")
    rejected = _rejections(estimates)
    if fit.inliers.sum() < MIN_WINDOWS:
        return GroupRegistration(status="failed", reason=f"the windows disagree: no {MIN_WINDOWS} agree on a shift "
                                 f"({len(used)} measured)", rejected=rejected, windows=tuple(estimates),
                                 seconds=time.perf_counter() - t0, **common)
    return _registered(scene, g_grid, choice, estimates, rejected, t0, common)


def _registered(scene: Scene, g_grid, choice, estimates: list, rejected: dict, t0: float,
                common: dict) -> GroupRegistration:
    """The registration of a group whose windows agree on ``choice`` (a model and its fit): the correction of
    its transform, its shift at the scene's centre (reference, group and metre units) and their uncertainty."""
    fit = choice.fit
    (a0, a1, a2), (b0, b1, b2) = fit.params
    # d(u) = [row, col] = params @ [1, col, row]; the correction maps u -> u - d(u)
    # in (x=col, y=row) order.
    correction = Affine(1 - b1, -b2, -b0, -a1, 1 - a2, -a0)
    d_mid = fit.predict(np.array([scene.height / 2]), np.array([scene.width / 2]))[0]
    per_group = scene.grid(scene.reference).pixel_size / g_grid.pixel_size
    shift_m = None
    if scene.georeferenced:
        dx, dy = Affine(scene.transform.a, scene.transform.b, 0, scene.transform.d, scene.transform.e, 0) @ (
            d_mid[1], d_mid[0])
        shift_m = (float(dy), float(dx))
    sigma = tuple(float(v) * per_group for v in fit.shift_sigma)
    return GroupRegistration(
        status="ok", model=fit.kind, correction=correction,
        shift_reference_px=(float(d_mid[0]), float(d_mid[1])),
        shift_group_px=(float(d_mid[0] * per_group), float(d_mid[1] * per_group)), shift_m=shift_m,
        windows_used=int(fit.inliers.sum()), rejected=rejected, residual_rms=fit.rms,
        windows=tuple(estimates), seconds=time.perf_counter() - t0, model_reason=choice.reason,
        shift_sigma_group_px=sigma, **common)  # type: ignore[arg-type]


def _replace_reason(e: WindowEstimate, reason: str) -> WindowEstimate:
    return WindowEstimate(e.row, e.col, e.displacement, e.peak, e.correlation_before, reason, e.sigma)


def _ref_cov(sigma: tuple[float, float]) -> np.ndarray:
    return np.diag(np.square(sigma))


def _window(scene: Scene, name: str, anchor: str, match: BandMatch, k_t: Affine, size: int, screen: CloudScreen,
            resampling, to_ref: Affine, upsample: int, min_peak: float) -> WindowEstimate:
    """Read, screen and measure one window (``k_t``: its pixels on the compared grid)."""
    gdat, gval = scene.warp(name, k_t, (size, size), positions=match.group_positions,
                            resampling=resampling(name), corrected=False)
    adat, aval = scene.warp(anchor, k_t, (size, size), positions=match.anchor_positions,
                            resampling=resampling(anchor), corrected=True)
    centre = ~scene.transform @ (k_t @ (size / 2, size / 2))
    row, col = float(centre[1]), float(centre[0])
    nan2 = (math.nan, math.nan)

    def reject(reason: str, before: float = math.nan) -> WindowEstimate:
        return WindowEstimate(row, col, nan2, math.nan, before, reason)

    valid = gval & aval
    if valid.mean() < MIN_VALID_FRACTION:
        return reject("nodata")
    cloudy = screen.cloudy(k_t, size, resampling)
    if cloudy is not None:
        if (cloudy & valid).sum() > screen.fraction * valid.sum():
            return reject(f"clouds ({'product mask' if scene.cloud_mask is not None else 'bright'})")
        valid &= ~cloudy
        if valid.mean() < MIN_VALID_FRACTION:
            return reject("nodata")
    gimg, aimg = gdat.mean(axis=0).astype(np.float64), adat.mean(axis=0).astype(np.float64)
    gimg[~valid] = gimg[valid].mean()
    aimg[~valid] = aimg[valid].mean()
    if any(float(x[valid].std()) <= MIN_RELATIVE_STD * abs(float(x[valid].mean())) or float(x[valid].std()) == 0.0
           for x in (gimg, aimg)):
        return reject("flat texture")
    before = _ncc(gimg[valid], aimg[valid])
    est = estimate_window(aimg, gimg, valid, upsample=upsample, max_shift=MAX_SHIFT_FRACTION * size)
    if est.reason is not None:
        return reject(est.reason, before)
    if not est.correlation >= min_peak:
        return WindowEstimate(row, col, nan2, est.correlation, before, "low correlation peak")
    d_col, d_row = to_ref @ (float(est.shift[1]), float(est.shift[0]))
    # Window pixels -> reference pixels: the compared grid's pixel is a scaled reference pixel.
    k = math.hypot(to_ref.a, to_ref.d)
    sig = (math.sqrt(est.covariance[0, 0]) * k, math.sqrt(est.covariance[1, 1]) * k)
    return WindowEstimate(row, col, (d_row, d_col), est.correlation, before, None, sig)


def register_scene(scene: Scene, *, groups: Optional[Sequence[str]] = None, model: str = "auto",
                   grid: int = DEFAULT_GRID, window: int = DEFAULT_WINDOW, upsample: int = DEFAULT_UPSAMPLE,
                   min_peak: float = MIN_PEAK) -> Registration:
    """Estimate every band group's misalignment against the reference grid.

    Each group is compared with an anchor (the reference group, or an already
    registered group that matches it spectrally much better, e.g. SWIR against
    the multispectral NIR) on a grid of windows spread over the scene: windows
    of ``window`` pixels of the coarser group (at most half its shorter side,
    at least 16), as many per side as fit with at most 50 % overlap, at most
    ``grid``. Only those windows are read, so the cost does not grow with the
    scene. In each window the finer group is area-averaged (``average``
    resampling) onto the coarser group's own pixel grid; undeclared fill
    (:func:`tiler.registration.detect_fill`) and clouds (the product's mask,
    else bright reflectance: :class:`tiler.registration.CloudScreen`) are
    masked out. Phase correlation on Hann-tapered windows finds the shift to
    a fraction of a pixel, and ECC refines it by least squares
    (:func:`tiler.registration.estimate_window`), giving each window an
    uncertainty from its residual and curvature. Windows with nodata, flat
    texture, clouds, a low correlation peak, an implausible or unstable
    shift are rejected with their reason; the rest are combined by weighted
    robust least squares into a translation, or an affine field where an
    F-test says the shift varies across the scene beyond the windows' noise
    (``model="auto"``, :func:`tiler.registration.select_model`).

    Parameters
    ----------
    scene : Scene
    groups : sequence of str, optional
        Groups to register (default all but the reference; groups marked
        ``register = false`` are skipped). Anchors they need are registered too.
    model : {"auto", "translation", "affine"}
    grid : int, default 8
        Most windows per side.
    window : int, default 128
        Largest window side in pixels of the coarser group of each pair.
    upsample : int, default 10
        Precision of the coarse phase-correlation step, 1/upsample pixel.
    min_peak : float, default 0.3
        Least normalised cross-correlation after alignment for a window to count.

    Returns
    -------
    Registration
        One :class:`GroupRegistration` per group, failures included (never a
        silent zero shift). Apply it with :meth:`Registration.apply`.

    Raises
    ------
    RegistrationError
        For a bad ``model``, ``grid`` or ``window``, or an unknown group.

    References
    ----------
    Guizar-Sicairos, Thurman & Fienup, "Efficient subpixel image registration
    algorithms", Opt. Lett. 33(2), 156-158 (2008). Evangelidis & Psarakis,
    "Parametric image alignment using enhanced correlation coefficient
    maximization", IEEE TPAMI 30(10), 1858-1865 (2008).
    """
    if model not in MODELS:
        raise RegistrationError(f"registration model must be one of {', '.join(MODELS)}, got {model!r}")
    if not isinstance(grid, int) or grid < 2:
        raise RegistrationError(f"the registration grid must be at least 2 windows per side "
                                f"(--registration-grid), got {grid!r}")
    if not isinstance(window, int) or window < MIN_WINDOW:
        raise RegistrationError(f"the registration window must be at least {MIN_WINDOW} pixels "
                                f"(--registration-window), got {window!r}")
    if upsample < 1:
        raise RegistrationError(f"upsample must be >= 1, got {upsample!r}")
    t0 = time.perf_counter()
    names = [g.name for g in scene.groups]
    wanted = set(names if groups is None else groups)
    unknown = wanted - set(names)
    if unknown:
        raise RegistrationError(f"no band group(s) {', '.join(sorted(unknown))} in {scene.path!r}; "
                                f"its groups: {', '.join(names)}")
    for n in list(wanted):
        anchor = scene.group(n).anchor
        while anchor is not None and anchor not in wanted:
            wanted.add(anchor)
            anchor = scene.group(anchor).anchor
    done: dict[str, GroupRegistration] = {scene.reference: GroupRegistration(scene.reference, None, "reference")}
    memo: dict = {}
    todo = [n for n in names if n in wanted and n != scene.reference]
    for n in _order(scene, todo):
        g = scene.group(n)
        if not g.register:
            done[n] = GroupRegistration(n, None, "skipped", reason="register = false in the scene description")
            continue
        anchor, match = _choose_anchor(scene, n, done)
        if done.get(anchor) is not None and done[anchor].status == "failed":
            done[n] = GroupRegistration(n, anchor, "failed", reason=f"its anchor group {anchor!r} failed")
            continue
        if anchor not in done:
            done[n] = GroupRegistration(n, anchor, "failed", reason=f"its anchor group {anchor!r} is not registered "
                                        "first; anchors must not form a cycle")
            continue
        reg = _register_group(scene, n, anchor, match, model=model, grid_n=grid, window=window,
                              upsample=upsample, min_peak=min_peak, memo=memo)
        if reg.status == "ok":
            scene.set_correction(n, reg.correction)  # chained groups read their anchor corrected
        log.info("registered %s against %s: %s %s", n, anchor, reg.status, reg.reason or reg.shift_group_px)
        done[n] = reg
    ordered = {n: done[n] for n in names if n in done}
    return Registration(scene.reference, ordered, time.perf_counter() - t0)
