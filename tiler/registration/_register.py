"""Estimating each band group's misalignment by sub-pixel phase correlation."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
from affine import Affine

from tiler.errors import RegistrationError
from tiler.registration._fit import Fit, fit_affine, fit_translation
from tiler.registration._match import BandMatch, match_bands
from tiler.scene import Scene

__all__ = ["WindowEstimate", "GroupRegistration", "Registration", "register_scene", "MODELS",
           "DEFAULT_GRID", "DEFAULT_WINDOW", "DEFAULT_UPSAMPLE", "MIN_PEAK", "MIN_WINDOWS"]

log = logging.getLogger(__name__)

#: Displacement models: ``auto`` picks affine only where it explains the
#: windows clearly better than a translation.
MODELS = ("auto", "translation", "affine")
#: Windows per side of the estimation grid (a bounded number of reads,
#: whatever the scene size).
DEFAULT_GRID = 8
#: Window side in pixels of the coarser group of a pair.
DEFAULT_WINDOW = 128
#: Phase-correlation upsampling: shifts resolved to 1/100 pixel
#: (Guizar-Sicairos et al., Opt. Lett. 33, 156, 2008).
DEFAULT_UPSAMPLE = 100
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
#: Usable fraction of valid (not nodata) pixels in a window.
MIN_VALID_FRACTION = 0.95
#: A window whose standard deviation is below this fraction of its mean
#: magnitude has no texture to correlate.
MIN_RELATIVE_STD = 0.01
#: Cloud screen, on a visible band (clouds are bright in the visible where
#: land, vegetation and water are dark): a window is rejected when more than
#: CLOUD_FRACTION of its pixels are brighter than CLOUD_FACTOR times the
#: clear-sky level, the lower quartile of the windows' median brightness.
#: Clouds must go: they show parallax between bands recorded at different
#: focal-plane positions (about 3 pan pixels in the shared Landsat-8 scene).
#: A heuristic, stated as such; it needs radiometrically scaled bands to be
#: sharp, since a large dark offset in raw counts compresses the ratio.
CLOUD_FACTOR = 1.5
CLOUD_FRACTION = 0.25
#: Visible range (nm) for the cloud screen band: the anchor's (else the
#: group's) shortest-wavelength narrow band in it, else a broad (pan) band.
VISIBLE_NM = (450.0, 700.0)
#: Shifts beyond this fraction of the window side are implausible.
MAX_SHIFT_FRACTION = 0.25
#: The affine model needs this many inlier windows ...
AFFINE_MIN_WINDOWS = 6
#: ... at least as many as the translation explains, and must cut the
#: translation's residual RMS on the same windows at least by this factor,
#: that RMS itself exceeding AFFINE_MIN_RMS pixels of the coarser group.
AFFINE_GAIN = 0.6
AFFINE_MIN_RMS = 0.1
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
    """

    row: float
    col: float
    displacement: tuple[float, float]
    peak: float
    correlation_before: float
    reason: Optional[str] = None


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
            "windows": [{"row": r(w.row, 1), "col": r(w.col, 1),
                         "displacement": [r(v) for v in w.displacement], "peak": r(w.peak),
                         "correlation_before": r(w.correlation_before), "reason": w.reason}
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

    def apply(self, scene: Scene) -> None:
        """Set every successful group's correction on ``scene``.

        Raises
        ------
        RegistrationError
            If a group failed; the message gives each reason and the fix.
        """
        if self.failures:
            details = "; ".join(f"group {g.group!r} against {g.anchor!r}: {g.reason}" for g in self.failures)
            raise RegistrationError(
                f"registration failed: {details}. Check the scene (clouds, nodata, wrong band names), or pass "
                "--registration off to proceed with the groups placed by their georeferencing only"
            )
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


def _taper(n: int) -> np.ndarray:
    w = np.hanning(n)
    return np.outer(w, w)


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


def _cloud_band(scene: Scene, name: str, match: BandMatch) -> Optional[tuple[str, int]]:
    """The group's shortest-wavelength visible band (a compared one first), or None."""
    bands = scene.group(name).bands
    visible = [k for k, b in enumerate(bands) if b.centre is not None and VISIBLE_NM[0] <= b.centre <= VISIBLE_NM[1]
               and b.spectral_range[1] - b.spectral_range[0] < 150.0]
    if not visible:
        broad = [k for k, b in enumerate(bands) if b.centre is not None and VISIBLE_NM[0] <= b.centre <= VISIBLE_NM[1]]
        visible = broad
    if not visible:
        return None
    return name, min(visible, key=lambda k: bands[k].centre)


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


def _window_origins(scene: Scene, coarse: str, n: int, size: int) -> list[tuple[int, int]]:
    """Top-left corners (row, col) on the coarse group's grid of an n x n grid of windows."""
    grid = scene.grid(coarse)
    origins = []
    for axis_len in (grid.height, grid.width):
        span = max(axis_len - size, 0)
        origins.append(sorted({int(round(span * (k + 0.5) / n)) for k in range(n)}))
    return [(r, c) for r in origins[0] for c in origins[1]]


def _register_group(scene: Scene, name: str, anchor: str, match: BandMatch, *, model: str, grid_n: int,
                    window: int, upsample: int, min_peak: float) -> GroupRegistration:
    t0 = time.perf_counter()
    g_grid, a_grid = scene.grid(name), scene.grid(anchor)
    coarse = name if g_grid.pixel_size >= a_grid.pixel_size else anchor
    c_grid = scene.grid(coarse)
    size = min(window, c_grid.height, c_grid.width)
    coarse_t = scene.source_transform(coarse, corrected=coarse != name)
    px = c_grid.pixel_size
    describe = match.describe(scene.group(name), scene.group(anchor))
    taper = _taper(size)
    ref_inv_lin = ~Affine(scene.transform.a, scene.transform.b, 0, scene.transform.d, scene.transform.e, 0)
    k_lin = Affine(coarse_t.a, coarse_t.b, 0, coarse_t.d, coarse_t.e, 0)
    to_ref = ref_inv_lin @ k_lin  # coarse-pixel vectors -> reference-pixel vectors

    def resampling(group_name: str) -> Optional[str]:
        # Area-average the finer side onto the coarser grid, never point-sample.
        return "average" if scene.grid(group_name).pixel_size < px * (1 - 1e-9) else None

    cloud_band = _cloud_band(scene, anchor, match) or _cloud_band(scene, name, match)
    samples = []
    for r0, c0 in _window_origins(scene, coarse, grid_n, size):
        k_t = coarse_t @ Affine.translation(c0, r0)
        gdat, gval = scene.warp(name, k_t, (size, size), positions=match.group_positions,
                                resampling=resampling(name), corrected=False)
        adat, aval = scene.warp(anchor, k_t, (size, size), positions=match.anchor_positions,
                                resampling=resampling(anchor), corrected=True)
        if cloud_band is None:
            bright = None
        else:
            bname, bpos = cloud_band
            bright, _ = scene.warp(bname, k_t, (size, size), positions=[bpos], resampling=resampling(bname),
                                   corrected=bname != name)
            bright = bright[0]
        centre = ~scene.transform @ (k_t @ (size / 2, size / 2))
        samples.append((centre[1], centre[0], gdat.mean(axis=0), adat.mean(axis=0), gval & aval, bright))
    medians = [float(np.nanmedian(b)) for *_, v, b in samples if b is not None and v.mean() >= MIN_VALID_FRACTION]
    cloud_level = CLOUD_FACTOR * float(np.percentile(medians, 25)) if medians else math.inf

    # Imported here, not at module level: `tiler run` and `tiler indices` load
    # this module and should not pay for SciPy's and scikit-image's imports
    # unless they register.
    from scipy import ndimage
    from skimage.registration import phase_cross_correlation

    estimates, centres, disps = [], [], []
    nan2 = (float("nan"), float("nan"))
    for row, col, gimg, aimg, valid, bright in samples:
        def reject(reason: str, before: float = float("nan")) -> None:
            estimates.append(WindowEstimate(row, col, nan2, float("nan"), before, reason))
        if valid.mean() < MIN_VALID_FRACTION:
            reject("nodata")
            continue
        gimg = np.where(valid, gimg, gimg[valid].mean())
        aimg = np.where(valid, aimg, aimg[valid].mean())
        if any(float(x.std()) <= MIN_RELATIVE_STD * abs(float(x.mean())) or float(x.std()) == 0.0
               for x in (gimg, aimg)):
            reject("flat texture")
            continue
        if bright is not None and cloud_level > 0 and (bright[valid] > cloud_level).mean() > CLOUD_FRACTION:
            reject("clouds")
            continue
        before = _ncc(gimg, aimg)
        a_t = (aimg - aimg.mean()) * taper
        g_t = (gimg - gimg.mean()) * taper
        shift, _, _ = phase_cross_correlation(a_t, g_t, upsample_factor=upsample, normalization="phase")
        if np.hypot(*shift) > MAX_SHIFT_FRACTION * size:
            reject("implausible shift", before)
            continue
        aligned = ndimage.shift(gimg, shift, order=3, mode="nearest")
        m = int(math.ceil(np.abs(shift).max())) + 2
        peak = _ncc(aligned[m:-m, m:-m], aimg[m:-m, m:-m])
        if not peak >= min_peak:
            reject("low correlation peak", before)
            continue
        # phase_cross_correlation returns the shift that registers the group
        # onto the anchor: the group's content sits at minus that shift.
        d_col, d_row = to_ref @ (-float(shift[1]), -float(shift[0]))
        estimates.append(WindowEstimate(row, col, (d_row, d_col), peak, before))

    measured = [e.peak for e in estimates if e.reason is None]
    weak = float(np.median(measured)) - PEAK_MARGIN if measured else 0.0
    for k, e in enumerate(estimates):
        if e.reason is None and e.peak < weak:
            estimates[k] = WindowEstimate(e.row, e.col, e.displacement, e.peak, e.correlation_before,
                                          "weak peak (moving surface or haze)")
        elif e.reason is None:
            centres.append((e.row, e.col))
            disps.append(e.displacement)

    rejected: dict[str, int] = {}
    for e in estimates:
        if e.reason:
            rejected[e.reason] = rejected.get(e.reason, 0) + 1
    common = dict(group=name, anchor=anchor, match=describe, compared_pixel_size=px)
    if len(disps) < MIN_WINDOWS:
        why = ", ".join(f"{n} {k}" for k, n in sorted(rejected.items())) or "none measured"
        return GroupRegistration(
            status="failed", reason=f"only {len(disps)} of {len(estimates)} windows usable ({why}); "
                                    f"need {MIN_WINDOWS}",
            rejected=rejected, windows=tuple(estimates), seconds=time.perf_counter() - t0, **common)

    centres_a, disps_a = np.asarray(centres), np.asarray(disps)
    ref_per_coarse = px / scene.grid(scene.reference).pixel_size
    floor = OUTLIER_FLOOR_PX * ref_per_coarse
    fit: Fit = fit_translation(centres_a, disps_a, floor=floor)
    if model in ("auto", "affine"):
        aff = fit_affine(centres_a, disps_a, floor=floor)
        # Compare both models on the same windows: the affine's inliers.
        same = disps_a[aff.inliers]
        t_rms = float(np.sqrt(np.mean(np.sum((same - same.mean(axis=0)) ** 2, axis=1)))) if len(same) else 0.0
        clearly_better = (aff.inliers.sum() >= max(AFFINE_MIN_WINDOWS, fit.inliers.sum())
                          and t_rms > AFFINE_MIN_RMS * ref_per_coarse and aff.rms < AFFINE_GAIN * t_rms)
        if model == "affine":
            if aff.inliers.sum() < AFFINE_MIN_WINDOWS:
                return GroupRegistration(
                    status="failed", reason=f"the affine model needs {AFFINE_MIN_WINDOWS} agreeing windows, "
                                            f"{int(aff.inliers.sum())} agree; use the translation model",
                    rejected=rejected, windows=tuple(estimates), seconds=time.perf_counter() - t0, **common)
            fit = aff
        elif clearly_better:
            fit = aff
    # Mark outliers among the measured windows.
    k = 0
    final = []
    for e in estimates:
        if e.reason is None:
            if not fit.inliers[k]:
                e = WindowEstimate(e.row, e.col, e.displacement, e.peak, e.correlation_before,
                                   "outlier (disagrees with the other windows)")
                rejected[e.reason] = rejected.get(e.reason, 0) + 1
            k += 1
        final.append(e)
    if fit.inliers.sum() < MIN_WINDOWS:
        return GroupRegistration(status="failed", reason="the windows disagree: no consistent shift",
                                 rejected=rejected, windows=tuple(final), seconds=time.perf_counter() - t0, **common)
    (a0, a1, a2), (b0, b1, b2) = fit.params
    # d(u) = [row, col] = params @ [1, col, row]; the correction maps u -> u - d(u)
    # in (x=col, y=row) order.
    correction = Affine(1 - b1, -b2, -b0, -a1, 1 - a2, -a0)
    mid_row, mid_col = scene.height / 2, scene.width / 2
    d_mid = fit.predict(np.array([mid_row]), np.array([mid_col]))[0]
    per_group = scene.grid(scene.reference).pixel_size / g_grid.pixel_size
    shift_m = None
    if scene.georeferenced:
        dx, dy = Affine(scene.transform.a, scene.transform.b, 0, scene.transform.d, scene.transform.e, 0) @ (
            d_mid[1], d_mid[0])
        shift_m = (float(dy), float(dx))
    return GroupRegistration(
        status="ok", model=fit.kind, correction=correction,
        shift_reference_px=(float(d_mid[0]), float(d_mid[1])),
        shift_group_px=(float(d_mid[0] * per_group), float(d_mid[1] * per_group)), shift_m=shift_m,
        windows_used=int(fit.inliers.sum()), rejected=rejected, residual_rms=fit.rms,
        windows=tuple(final), seconds=time.perf_counter() - t0, **common)


def register_scene(scene: Scene, *, groups: Optional[Sequence[str]] = None, model: str = "auto",
                   grid: int = DEFAULT_GRID, window: int = DEFAULT_WINDOW, upsample: int = DEFAULT_UPSAMPLE,
                   min_peak: float = MIN_PEAK) -> Registration:
    """Estimate every band group's misalignment against the reference grid.

    Each group is compared with an anchor (the reference group, or an already
    registered group that matches it spectrally much better, e.g. SWIR against
    the multispectral NIR) on a ``grid x grid`` set of windows spread over the
    scene. Only those windows are read, so the cost does not grow with the
    scene. In each window the finer of the two groups is area-averaged
    (``average`` resampling) onto the coarser group's own pixel grid, both
    sides are tapered (Hann) and compared by sub-pixel phase correlation
    (:func:`skimage.registration.phase_cross_correlation`, upsampled
    ``upsample`` times). Windows with nodata, flat texture, clouds, a low
    correlation peak or an implausible shift are rejected; the rest are
    combined robustly into a translation, or an affine field where the shift
    varies across the scene and enough windows agree (``model="auto"``).

    Parameters
    ----------
    scene : Scene
    groups : sequence of str, optional
        Groups to register (default all but the reference; groups marked
        ``register = false`` are skipped). Anchors they need are registered too.
    model : {"auto", "translation", "affine"}
    grid : int, default 8
        Windows per side.
    window : int, default 128
        Window side in pixels of the coarser group of each pair.
    upsample : int, default 100
        Sub-pixel precision 1/upsample pixel.
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
    algorithms", Opt. Lett. 33(2), 156-158 (2008).
    """
    if model not in MODELS:
        raise RegistrationError(f"registration model must be one of {', '.join(MODELS)}, got {model!r}")
    if grid < 2 or window < 16 or upsample < 1:
        raise RegistrationError(f"registration needs grid >= 2, window >= 16 and upsample >= 1, got grid={grid}, "
                                f"window={window}, upsample={upsample}")
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
                              upsample=upsample, min_peak=min_peak)
        if reg.status == "ok":
            scene.set_correction(n, reg.correction)  # chained groups read their anchor corrected
        log.info("registered %s against %s: %s %s", n, anchor, reg.status, reg.reason or reg.shift_group_px)
        done[n] = reg
    ordered = {n: done[n] for n in names if n in done}
    return Registration(scene.reference, ordered, time.perf_counter() - t0)
