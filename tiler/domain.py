"""The input domain of a model, and the check of a scene against it.

A network trained on 8-bit aerial RGB gives confident garbage on 16-bit
digital numbers or on reflectance in [0, 1] (DESIGN.md, invariant 10). The
model file records the domain of its training inputs (:class:`InputDomain`:
per channel the dtype and robust value range, and the pixel size where the
images were georeferenced); before predicting, :func:`sample_channels` reads a
few hundred small windows spread over the scene and :func:`check_domain`
compares.

Rules (per channel, on the channel values as fed to the model's normalisation,
after ``--input-scale``), with ``[lo, hi]`` the 1st and 99th percentiles and
``span = hi - lo`` of the model's training values:

* **refused** when the scene's robust range reaches beyond the model's by more
  than the model's whole span (``(hi_scene - hi) / span > 1`` or
  ``(lo - lo_scene) / span > 1``): a different unit or bit depth;
* **refused** when the scene's values lie wholly outside the model's range
  (``hi_scene < lo`` or ``lo_scene > hi``) *and* their span is below 1/100 of
  the model's (two orders of magnitude: reflectance in [0, 1] against 0–255
  counts). A narrow range alone is no reason: open sea, a padded tile or a
  1×1 scene is uniform, not foreign, and a constant channel is never refused
  for its range;
* **refused** when the model saw integers of a type (e.g. uint8) and the scene's
  values exceed that type's range by more than :data:`_ROUNDING_MARGIN` of the
  model's span (a dtype the model never saw; the margin admits scaled values
  such as 257.1 against 255 that round into the model's range);
* **refused** when the sampled pixels of a scene of two or more channels take
  between 2 and :data:`MAX_PALETTE_COLOURS` distinct values (colours) in all,
  among at least :data:`MIN_PALETTE_SAMPLES` pixels: a class map or a palette
  image (a colour-coded mask given as the scene), not imagery, whose sensor
  noise alone makes hundreds of combinations. One colour is a uniform scene
  and runs;
* a **warning** when the scene's dtype differs but the values fit (not after
  ``--input-scale``, which states the mapping on purpose), when the pixel
  size differs from the model's by more than a factor 2, and when the scene's
  pixel size is known but the model's is not (it cannot be checked).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from tiler.errors import DomainError, UsageError

__all__ = [
    "ChannelDomain",
    "InputDomain",
    "DomainVerdict",
    "InputScale",
    "measure_domain",
    "sample_channels",
    "check_domain",
    "PERCENTILES",
]

#: Robust range of a channel: its 1st and 99th percentiles (ignores the
#: saturated and dark outliers that a min/max would follow).
PERCENTILES = (1.0, 99.0)
#: How far (in units of the model's span) a scene's range may reach past the model's.
_MAX_REACH = 1.0
#: Smallest scene span relative to the model's: two orders of magnitude.
_MIN_SPAN_RATIO = 0.01
#: Values past an integer type's maximum admitted, as a fraction of the model's span
#: (2 %: five counts of an 8-bit range), for scaled values that round into the model's range.
_ROUNDING_MARGIN = 0.02
#: At most this many distinct colours in a multi-channel scene's samples is a class map, not imagery:
#: land-cover legends have 6 (the Dubai masks) to 20 (NLCD) classes; sensor noise of even a uniform
#: scene spreads a few hundred sampled pixels over far more combinations of its channels.
MAX_PALETTE_COLOURS = 32
#: The palette rule needs at least this many sampled pixels (a tiny scene has few colours anyway).
MIN_PALETTE_SAMPLES = 256
#: A pixel size more than this factor off the model's gives a warning.
PIXEL_SIZE_FACTOR = 2.0
#: Windows per side of the sampling grid, and their side in pixels.
SAMPLE_GRID, SAMPLE_SIZE = 16, 24


@dataclass(frozen=True)
class ChannelDomain:
    """The training values of one model channel.

    Attributes
    ----------
    name : str
        Channel name.
    dtype : str
        NumPy dtype name of the values as read (``uint8``; ``float32`` for
        radiometrically scaled bands and index channels).
    low, high : float
        1st and 99th percentile of the training values (:data:`PERCENTILES`).
    """

    name: str
    dtype: str
    low: float
    high: float

    @property
    def span(self) -> float:
        """``high - low``, at least a tiny positive number."""
        return max(self.high - self.low, 1e-12)


@dataclass(frozen=True)
class InputDomain:
    """The domain of a model's training inputs, stored in its model file.

    Attributes
    ----------
    channels : tuple of ChannelDomain
        One per model input channel, in order.
    pixel_size : float or None
        Ground sampling distance of the training images in metres, None when
        they were not georeferenced.
    """

    channels: tuple[ChannelDomain, ...]
    pixel_size: Optional[float] = None

    def to_dict(self) -> dict:
        """JSON-ready form (stored in the model file's ``tiler.json``)."""
        return {"channels": [asdict(c) for c in self.channels], "pixel_size": self.pixel_size,
                "percentiles": list(PERCENTILES)}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "InputDomain":
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(ChannelDomain(str(c["name"]), str(c["dtype"]), float(c["low"]), float(c["high"]))
                         for c in doc["channels"]),
                   None if doc.get("pixel_size") is None else float(doc["pixel_size"]))


def measure_domain(names: Sequence[str], samples: Sequence[np.ndarray], dtypes: Sequence[str], *,
                   pixel_size: Optional[float] = None) -> InputDomain:
    """Measure an :class:`InputDomain` from training values.

    Parameters
    ----------
    names : sequence of str
        Channel names.
    samples : sequence of ndarray
        Per channel, a 1-D array of (valid, finite) training values.
    dtypes : sequence of str
        Per channel, the dtype of the values as read.
    pixel_size : float, optional
        Ground sampling distance in metres, where known.

    Returns
    -------
    InputDomain

    Raises
    ------
    ValueError
        If the lengths differ or a channel has no finite value.
    """
    if not len(names) == len(samples) == len(dtypes):
        raise ValueError(f"{len(names)} names, {len(samples)} samples and {len(dtypes)} dtypes")
    channels = []
    for n, s, d in zip(names, samples, dtypes):
        s = np.asarray(s, np.float64).ravel()
        s = s[np.isfinite(s)]
        if s.size == 0:
            raise ValueError(f"channel {n!r} has no finite training value")
        lo, hi = np.percentile(s, PERCENTILES)
        channels.append(ChannelDomain(n, np.dtype(d).name, float(lo), float(hi)))
    return InputDomain(tuple(channels), pixel_size)


@dataclass(frozen=True)
class InputScale:
    """``--input-scale``: ``value = value * scale + offset`` per model channel, before normalisation.

    Parameters
    ----------
    scale, offset : tuple of float
        One pair for every band channel (index channels, already unitless,
        stay as they are), or one pair per channel.
    """

    scale: tuple[float, ...]
    offset: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.scale) != len(self.offset) or not self.scale:
            raise UsageError("--input-scale needs SCALE[,OFFSET] once, or once per model channel")
        if not all(math.isfinite(v) for v in self.scale + self.offset) or any(s == 0 for s in self.scale):
            raise UsageError(f"--input-scale values must be finite and the scale non-zero, got "
                             f"{list(zip(self.scale, self.offset))}")

    @classmethod
    def parse(cls, items: Union[None, "InputScale", Sequence[str]]) -> Optional["InputScale"]:
        """From ``--input-scale`` values, each ``SCALE`` or ``SCALE,OFFSET``; None for no item.

        An :class:`InputScale` is returned as it is (so entry points accept either).

        Raises
        ------
        UsageError
            For a malformed value.
        """
        if isinstance(items, InputScale):
            return items
        if not items:
            return None
        scale, offset = [], []
        for item in items:
            parts = [p.strip() for p in str(item).split(",")]
            try:
                if len(parts) not in (1, 2):
                    raise ValueError
                scale.append(float(parts[0]))
                offset.append(float(parts[1]) if len(parts) == 2 else 0.0)
            except ValueError:
                raise UsageError(f"--input-scale expects SCALE or SCALE,OFFSET such as 0.0625 or 0.0625,0; "
                                 f"got {item!r}") from None
        return cls(tuple(scale), tuple(offset))

    def per_channel(self, channels: Sequence[str], index_channels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Scale and offset arrays of shape (channel,), float32, for the model's channels.

        Raises
        ------
        UsageError
            If the number of pairs is neither 1 nor the number of channels.
        """
        n = len(channels)
        if len(self.scale) == n:
            return np.asarray(self.scale, np.float32), np.asarray(self.offset, np.float32)
        if len(self.scale) != 1:
            raise UsageError(f"--input-scale was given {len(self.scale)} times; give it once (all band "
                             f"channels) or {n} times (one per channel: {', '.join(channels)})")
        is_band = np.asarray([c not in index_channels for c in channels])
        return (np.where(is_band, self.scale[0], 1.0).astype(np.float32),
                np.where(is_band, self.offset[0], 0.0).astype(np.float32))

    def to_dict(self) -> dict:
        """JSON-ready form (for reports)."""
        return {"scale": list(self.scale), "offset": list(self.offset)}


def sample_channels(read, height: int, width: int, *, grid: int = SAMPLE_GRID,
                    size: int = SAMPLE_SIZE, strips: bool = False) -> list[np.ndarray]:
    """Values of each model channel at a grid of small windows spread over a scene.

    Parameters
    ----------
    read : callable
        ``read(rows, cols) -> (channels (channel, row, col) float32, valid (row, col) bool)``,
        the channels exactly as the model would get them (before normalisation).
    height, width : int
        Scene size in pixels.
    grid : int, default 16
        Windows per side (at most ``grid**2`` windows: a few hundred).
    size : int, default 24
        Window side in pixels.
    strips : bool, default False
        Read each row of windows as one full-width strip and cut the windows
        from it: the same pixels in ``grid`` reads instead of ``grid**2``, for
        files without random access (JPEG, PNG, striped compressed GeoTIFF),
        where every window read decodes the file from its first row (256
        windows of a 3.7 Mpx JPEG: 5.9 s; 16 strips: 0.3 s).

    Returns
    -------
    list of ndarray
        Per channel, a 1-D float64 array of the valid, finite values read.
    """
    rs = max(1, min(size, height))
    cs = max(1, min(size, width))
    row_starts = sorted({int(round(v)) for v in np.linspace(0, height - rs, min(grid, max(1, height // rs)))})
    col_starts = sorted({int(round(v)) for v in np.linspace(0, width - cs, min(grid, max(1, width // cs)))})
    parts: list[list[np.ndarray]] = []
    for r in row_starts:
        strip = read((r, r + rs), (0, width)) if strips else None
        for c in col_starts:
            if strip is None:
                data, valid = read((r, r + rs), (c, c + cs))
            else:
                data, valid = strip[0][:, :, c:c + cs], strip[1][:, c:c + cs]
            if not parts:
                parts = [[] for _ in range(data.shape[0])]
            for k in range(data.shape[0]):
                v = data[k][valid]
                parts[k].append(v[np.isfinite(v)].astype(np.float64))
    return [np.concatenate(p) if p else np.empty(0) for p in parts]


@dataclass(frozen=True)
class DomainVerdict:
    """The outcome of :func:`check_domain`.

    Attributes
    ----------
    ok : bool
        False when the scene is refused.
    problems : tuple of str
        Reasons for refusal, one per channel found far outside.
    warnings : tuple of str
        Dtype and pixel-size differences that do not refuse the scene.
    channels : tuple of dict
        Per channel: name, the scene's and the model's dtype and range.
    """

    ok: bool
    problems: tuple[str, ...]
    warnings: tuple[str, ...]
    channels: tuple[dict, ...]

    def to_dict(self) -> dict:
        """JSON-ready form (reports, ``tiler info --json``)."""
        return {"ok": self.ok, "problems": list(self.problems), "warnings": list(self.warnings),
                "channels": list(self.channels)}

    def raise_if_refused(self, *, fixes: str) -> None:
        """Raise :class:`DomainError` naming the problems and ``fixes`` when not ok."""
        if not self.ok:
            raise DomainError("the scene is outside the model's training domain: " + "; ".join(self.problems)
                              + ". " + fixes)


def _integer_max(dtype: str) -> Optional[float]:
    d = np.dtype(dtype)
    return float(np.iinfo(d).max) if d.kind in "ui" else None


def check_domain(domain: InputDomain, samples: Sequence[np.ndarray], dtypes: Sequence[str], *,
                 pixel_size: Optional[float] = None, scaled: bool = False) -> DomainVerdict:
    """Compare a scene's sampled channel values with a model's training domain.

    Parameters
    ----------
    domain : InputDomain
        From the model file.
    samples : sequence of ndarray
        Per channel, values sampled from the scene (:func:`sample_channels`).
    dtypes : sequence of str
        Per channel, the dtype of the scene's values as fed (``float32`` once
        scaled).
    pixel_size : float, optional
        The scene's pixel size in metres, where known.
    scaled : bool, default False
        The values were mapped by ``--input-scale``: the messages say so, and a
        dtype other than the model's is no warning.

    Returns
    -------
    DomainVerdict
        See the module docstring for the rules.

    Raises
    ------
    ValueError
        If the number of channels differs from the domain's.
    """
    if len(samples) != len(domain.channels) or len(dtypes) != len(domain.channels):
        raise ValueError(f"{len(samples)} sampled channels for a domain of {len(domain.channels)}")
    problems, warns, rows = [], [], []
    for ch, s, dt in zip(domain.channels, samples, dtypes):
        s = np.asarray(s, np.float64)
        if s.size == 0:
            rows.append({"name": ch.name, "model_dtype": ch.dtype, "model_range": [ch.low, ch.high],
                         "scene_dtype": dt, "scene_range": None})
            continue
        lo, hi = (float(v) for v in np.percentile(s, PERCENTILES))
        dtype = np.dtype(dt).name
        rows.append({"name": ch.name, "model_dtype": ch.dtype, "model_range": [ch.low, ch.high],
                     "scene_dtype": dtype, "scene_range": [lo, hi]})
        values = f"{dtype} values after --input-scale" if scaled else f"{dtype} values"
        what = (f"{ch.name}: scene {values} {_fmt(lo)}..{_fmt(hi)} (1st-99th percentile), "
                f"model trained on {ch.dtype} {_fmt(ch.low)}..{_fmt(ch.high)}")
        reach = max(hi - ch.high, ch.low - lo) / ch.span
        imax = _integer_max(ch.dtype)
        outside = hi < ch.low or lo > ch.high
        if imax is not None and hi > imax + _ROUNDING_MARGIN * ch.span:
            problems.append(f"{what} (values above {ch.dtype}'s maximum {imax:g})")
        elif reach > _MAX_REACH:
            problems.append(f"{what} (reaches {reach:.1f} model ranges beyond it)")
        elif outside and 0 < hi - lo < _MIN_SPAN_RATIO * ch.span:
            side = "below" if hi < ch.low else "above"
            problems.append(f"{what} (all {side} the model's range, and spanning 1/{ch.span / (hi - lo):.3g} "
                            "of it: another unit)")
        elif dtype != ch.dtype and not scaled:
            warns.append(f"{what}: another dtype, but the values fit the model's range")
    palette = _palette_colours(samples)
    if palette is not None:
        problems.append(f"its {len(samples[0])} sampled pixels take only {palette} distinct colours: it looks like a "
                        "class map or a palette image (a colour-coded mask?), not imagery; give the image itself")
    if pixel_size is not None and domain.pixel_size is None:
        warns.append(f"the model file does not record the pixel size of its training imagery (not georeferenced, "
                     f"and not documented by its source): the scene's {_fmt(pixel_size)} m cannot be checked "
                     "against it")
    if pixel_size is not None and domain.pixel_size is not None:
        ratio = pixel_size / domain.pixel_size
        if ratio > PIXEL_SIZE_FACTOR or ratio < 1 / PIXEL_SIZE_FACTOR:
            warns.append(f"pixel size {_fmt(pixel_size)} m is {ratio:.2g}x the model's {_fmt(domain.pixel_size)} m; "
                         "objects will look smaller or larger than in training (resample the scene to improve)")
    return DomainVerdict(not problems, tuple(problems), tuple(warns), tuple(rows))


def _palette_colours(samples: Sequence[np.ndarray]) -> Optional[int]:
    """The number of distinct colours of a multi-channel scene's samples when it is a palette's, else None."""
    if len(samples) < 2 or len({len(s) for s in samples}) != 1 or len(samples[0]) < MIN_PALETTE_SAMPLES:
        return None
    # Imagery shows more colours than a palette in any few thousand of its pixels: decide on those first
    # (a run's domain check samples ~150,000 pixels; all of them are counted only for a palette-like few).
    step = max(1, len(samples[0]) // 4096)
    if len(np.unique(np.stack([np.asarray(s[::step]) for s in samples], axis=1), axis=0)) > MAX_PALETTE_COLOURS:
        return None
    colours = len(np.unique(np.stack([np.asarray(s) for s in samples], axis=1), axis=0))
    return colours if 2 <= colours <= MAX_PALETTE_COLOURS else None


def _fmt(v: float) -> str:
    return f"{v:.4g}"
