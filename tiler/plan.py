"""The global patch grid, strips, row bands (parts) and column bands: pure arithmetic on shapes.

Nothing here reads pixels. Every position is in pixels of the reference grid,
with row 0 / col 0 at the scene's upper-left corner; positions may be negative
or past the scene's edge where a patch reaches into the reflect-padded border.

The patch grid is *global*: patch origins depend only on the scene size, the
patch size and the stride, never on where a strip or a column band starts. This
is what makes a streamed run equal a whole-scene run (DESIGN.md, invariant 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np

from tiler.errors import PlanError

__all__ = [
    "Axis",
    "PatchGrid",
    "Strip",
    "ColumnBand",
    "RowBand",
    "reflect_indices",
    "stride_from_overlap",
    "take_runs",
]


def stride_from_overlap(patch_size: int, overlap: float) -> int:
    """Stride in pixels for a fractional overlap.

    Parameters
    ----------
    patch_size : int
        Patch side in pixels, >= 1.
    overlap : float
        Fraction of the patch shared by neighbouring patches, in [0, 1).

    Returns
    -------
    int
        ``patch_size - round(overlap * patch_size)``, at least 1.

    Raises
    ------
    PlanError
        If ``overlap`` is outside [0, 1) or leaves a stride below 1 pixel.

    Examples
    --------
    >>> stride_from_overlap(256, 0.5)
    128
    """
    if not isinstance(overlap, (int, float)) or not math.isfinite(overlap) or not 0 <= overlap < 1:
        raise PlanError(
            f"overlap must be a fraction in [0, 1), got {overlap!r}; "
            "use e.g. 0.5 for half-patch overlap"
        )
    if patch_size < 1:
        raise PlanError(f"patch size must be >= 1 pixel, got {patch_size}")
    stride = patch_size - int(round(overlap * patch_size))
    if stride < 1:
        raise PlanError(
            f"overlap {overlap} of a {patch_size}-pixel patch leaves a stride of {stride} "
            "pixels; use a smaller overlap"
        )
    return stride


def reflect_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Indices of an axis of length ``size`` reflected at both ends.

    Index -1 maps to 1, -2 to 2, ``size`` to ``size - 2`` (NumPy's ``reflect``
    padding mode, edge pixel not repeated), applied as often as needed, so any
    range works however far it reaches past the edges.

    Parameters
    ----------
    start, stop : int
        Half-open range of (possibly out-of-range) indices.
    size : int
        Length of the axis, >= 1.

    Returns
    -------
    ndarray of shape (stop - start,), dtype int64
        Valid indices in ``[0, size)``.

    Raises
    ------
    PlanError
        If ``size`` < 1 or ``stop`` < ``start``.

    Examples
    --------
    >>> reflect_indices(-2, 6, 4).tolist()
    [2, 1, 0, 1, 2, 3, 2, 1]
    """
    if size < 1:
        raise PlanError(f"cannot reflect on an empty axis (size {size})")
    if stop < start:
        raise PlanError(f"empty or reversed range [{start}, {stop})")
    idx = np.arange(start, stop, dtype=np.int64)
    if size == 1:
        return np.zeros_like(idx)
    period = 2 * (size - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= size, period - idx, idx)


def _runs(idx: np.ndarray) -> list[tuple[slice, slice, bool]]:
    """``idx`` as runs stepping by +1 or -1: ``(output slice, input slice, reversed)`` each."""
    n = len(idx)
    steps = np.diff(idx)
    changes = np.flatnonzero(steps[1:] != steps[:-1]) + 1  # where the step differs from the one before
    runs = []
    start = 0
    while start < n:
        step = int(steps[start]) if start < n - 1 else 1
        stop = start + 1
        if step in (1, -1):
            k = np.searchsorted(changes, start, side="right")
            stop = int(changes[k]) + 1 if k < len(changes) else n  # the run ends where its step changes
        else:
            step = 1
        lo, hi = sorted((int(idx[start]), int(idx[stop - 1])))
        runs.append((slice(start, stop), slice(lo, hi + 1), step == -1))
        start = stop
    return runs


def take_runs(a: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``a[..., rows, :][..., cols]`` in one copy, each stretch of indices stepping by +-1 as one slice.

    A reflect-padded read (:func:`reflect_indices`) is a few such runs per
    axis: the interior in order and a mirrored margin at either end. Copying
    rectangle by rectangle moves spans of rows instead of gathering pixel by
    pixel; for a strip padded at its left and right edges, NumPy's gather
    along the columns was most of a read's time (issue 23).

    Parameters
    ----------
    a : ndarray of shape (..., row, col)
        Any array.
    rows, cols : ndarray of shape (n,) and (m,), integer
        Indices into the last two axes (in range).

    Returns
    -------
    ndarray of shape (..., n, m)
        A new array, equal to ``a[..., rows, :][..., cols]``.
    """
    rows, cols = np.asarray(rows), np.asarray(cols)
    out = np.empty(a.shape[:-2] + (len(rows), len(cols)), a.dtype)
    col_runs = _runs(cols)
    for out_r, in_r, flip_r in _runs(rows):
        part = a[..., in_r, :]
        if flip_r:
            part = part[..., ::-1, :]
        for out_c, in_c, flip_c in col_runs:
            block = part[..., in_c]
            out[..., out_r, out_c] = block[..., ::-1] if flip_c else block
    return out


@dataclass(frozen=True, slots=True)
class Axis:
    """Patch positions along one axis of the global grid.

    Patch ``i`` spans ``[origin(i), origin(i) + patch_size)``, with
    ``origin(i) = -margin + i * stride`` and ``margin = (patch_size - stride) // 2``:
    the first patch reaches half an overlap into the reflect-padded border so
    that the scene edge gets the same full weight as the scene interior, and
    the last patch likewise reaches at least ``margin`` past the far edge.

    Parameters
    ----------
    size : int
        Scene length along the axis in pixels, >= 1.
    patch_size : int
        Patch side in pixels, >= 1.
    stride : int
        Distance between patch origins in pixels, in [1, patch_size].
    """

    size: int
    patch_size: int
    stride: int

    def __post_init__(self) -> None:
        for name in ("size", "patch_size", "stride"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise PlanError(f"{name} must be a positive integer, got {value!r}")
        if self.stride > self.patch_size:
            raise PlanError(
                f"stride {self.stride} exceeds patch size {self.patch_size}: pixels "
                "between patches would get no prediction; use stride <= patch size"
            )

    @property
    def margin(self) -> int:
        """Reflect-padded pixels before the first scene pixel covered by patch 0."""
        return (self.patch_size - self.stride) // 2

    @property
    def count(self) -> int:
        """Number of patches along the axis."""
        span = self.size + 2 * self.margin - self.patch_size
        if span <= 0:
            return 1
        return -(-span // self.stride) + 1

    def origin(self, i: int) -> int:
        """First pixel of patch ``i`` (may be negative)."""
        return -self.margin + i * self.stride

    def origins(self) -> np.ndarray:
        """All patch origins, ndarray of shape (count,), int64."""
        return -self.margin + self.stride * np.arange(self.count, dtype=np.int64)

    def touching(self, start: int, stop: int) -> range:
        """Patches whose span intersects pixels ``[start, stop)``."""
        first = max(0, -(-(start + self.margin - self.patch_size + 1) // self.stride))
        last = min(self.count, (stop - 1 + self.margin) // self.stride + 1)
        return range(first, max(first, last))

    def final_before(self, i: int) -> int:
        """Pixels below this one are final once patches ``0..i`` are accumulated."""
        if i >= self.count - 1:
            return self.size
        return min(self.size, max(0, self.origin(i + 1)))


@dataclass(frozen=True, slots=True)
class Strip:
    """A run of consecutive patch rows processed together.

    Attributes
    ----------
    index : int
        Position of the strip, from 0.
    patch_rows : range
        Patch-row indices of the global grid in this strip.
    read_rows : tuple of int
        ``(start, stop)`` scene rows the strip's patches cover (may reach into
        the reflect-padded border).
    emit_rows : tuple of int
        ``(start, stop)`` scene rows that are final after this strip: no later
        patch touches them. Emitted rows of successive strips partition the scene.
    """

    index: int
    patch_rows: range
    read_rows: tuple[int, int]
    emit_rows: tuple[int, int]


@dataclass(frozen=True, slots=True)
class ColumnBand:
    """A band of output columns computed on its own, with a halo of patches.

    Attributes
    ----------
    index : int
        Position of the band, from 0.
    patch_cols : range
        Patch-column indices that touch ``emit_cols``.
    read_cols : tuple of int
        ``(start, stop)`` scene columns covered by those patches.
    emit_cols : tuple of int
        ``(start, stop)`` output columns this band writes. Bands partition the
        scene's columns.
    """

    index: int
    patch_cols: range
    read_cols: tuple[int, int]
    emit_cols: tuple[int, int]


@dataclass(frozen=True, slots=True)
class RowBand:
    """A band of output rows made of whole strips, computed on its own: a *part*.

    The band's first strip is widened upwards by the halo of patch rows of
    earlier strips that touch its rows, so the band computed alone gives
    exactly the values of the same rows in a whole-scene stream (the same
    patches, blended in the same order).

    Attributes
    ----------
    index : int
        Position of the band, from 0.
    strips : range
        Indices of the whole-scene strips (:meth:`PatchGrid.strips`) in the band.
    patch_rows : range
        Patch-row indices computed for the band, halo included.
    read_rows : tuple of int
        ``(start, stop)`` scene rows those patches cover.
    emit_rows : tuple of int
        ``(start, stop)`` output rows the band writes. Bands partition the
        scene's rows.
    """

    index: int
    strips: range
    patch_rows: range
    read_rows: tuple[int, int]
    emit_rows: tuple[int, int]

    @property
    def height(self) -> int:
        """Output rows of the band."""
        return self.emit_rows[1] - self.emit_rows[0]


@dataclass(frozen=True, slots=True)
class PatchGrid:
    """The global patch grid of a scene.

    Parameters
    ----------
    height, width : int
        Scene size in pixels of the reference grid.
    patch_size : int
        Square patch side in pixels.
    stride : int
        Distance between patch origins in pixels (``patch_size - overlap``).

    Raises
    ------
    PlanError
        If a size is not a positive integer or the stride exceeds the patch.

    Examples
    --------
    >>> grid = PatchGrid.from_overlap(1000, 600, patch_size=256, overlap=0.5)
    >>> grid.stride, grid.rows.count, grid.cols.count
    (128, 8, 5)
    """

    height: int
    width: int
    patch_size: int
    stride: int

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise PlanError(f"{name} must be a positive integer, got {value!r}")
        # Axis validates patch size and stride.
        Axis(self.height, self.patch_size, self.stride)
        Axis(self.width, self.patch_size, self.stride)

    @classmethod
    def from_overlap(cls, height: int, width: int, *, patch_size: int, overlap: float) -> "PatchGrid":
        """Grid for a fractional overlap in [0, 1) (see :func:`stride_from_overlap`)."""
        return cls(height, width, patch_size, stride_from_overlap(patch_size, overlap))

    @property
    def overlap(self) -> int:
        """Overlap between neighbouring patches in pixels."""
        return self.patch_size - self.stride

    @property
    def rows(self) -> Axis:
        """Patch positions along the rows."""
        return Axis(self.height, self.patch_size, self.stride)

    @property
    def cols(self) -> Axis:
        """Patch positions along the columns."""
        return Axis(self.width, self.patch_size, self.stride)

    @property
    def count(self) -> int:
        """Number of patches in the grid."""
        return self.rows.count * self.cols.count

    def strips(self, strip_rows: int, band: Optional[RowBand] = None) -> Iterator[Strip]:
        """Cut the grid into strips of whole patch rows.

        Parameters
        ----------
        strip_rows : int
            Wanted number of scene rows emitted per strip; rounded to whole
            strides, at least one patch row per strip.
        band : RowBand, optional
            Only the strips of this row band (from :meth:`row_bands` with the
            same ``strip_rows``), numbered from 0; the first one carries the
            band's halo of earlier patch rows.

        Yields
        ------
        Strip
            In order from the top; their ``emit_rows`` partition ``[0, height)``
            (the band's rows with ``band``).
        """
        if strip_rows < 1:
            raise PlanError(f"strip height must be >= 1 row, got {strip_rows}")
        rows = self.rows
        per_strip = max(1, strip_rows // self.stride)
        emitted = 0
        wanted = range(0, 1 << 62) if band is None else band.strips
        for index, first in enumerate(range(0, rows.count, per_strip)):
            last = min(rows.count, first + per_strip) - 1
            final = rows.final_before(last)
            if index in wanted:
                start, begin = first, emitted
                if band is not None and index == wanted.start:
                    start, begin = band.patch_rows.start, band.emit_rows[0]
                yield Strip(
                    index=index - wanted.start,
                    patch_rows=range(start, last + 1),
                    read_rows=(rows.origin(start), rows.origin(last) + self.patch_size),
                    emit_rows=(begin, final),
                )
            emitted = final

    def row_bands(self, strip_rows: int, parts: int) -> list[RowBand]:
        """Partition the output rows into ``parts`` bands of whole strips (fewer if there are fewer strips).

        Strips are shared out as evenly as possible, earlier bands taking one
        more where they do not divide. Each band's halo is every patch row of
        an earlier strip that touches the band's first output row.

        Parameters
        ----------
        strip_rows : int
            As for :meth:`strips`.
        parts : int
            Wanted number of bands, >= 1.

        Returns
        -------
        list of RowBand
            From the top; their ``emit_rows`` partition ``[0, height)``.

        Raises
        ------
        PlanError
            If ``parts`` < 1.
        """
        if not isinstance(parts, (int, np.integer)) or parts < 1:
            raise PlanError(f"number of parts must be a positive integer, got {parts!r}")
        strips = list(self.strips(strip_rows))
        parts = min(int(parts), len(strips))
        size, extra = divmod(len(strips), parts)
        out, first = [], 0
        rows = self.rows
        for index in range(parts):
            last = first + size + (1 if index < extra else 0)
            group = strips[first:last]
            e0, e1 = group[0].emit_rows[0], group[-1].emit_rows[1]
            touching = rows.touching(e0, max(e0 + 1, e1))
            start = min(group[0].patch_rows.start, touching.start)
            stop = group[-1].patch_rows.stop
            out.append(RowBand(index, range(first, last), range(start, stop),
                               (rows.origin(start), rows.origin(stop - 1) + self.patch_size), (e0, e1)))
            first = last
        return out

    def widened(self, band: RowBand, rows: int) -> RowBand:
        """The same part emitting ``rows`` more output rows above its own (and the patch rows they need).

        A run resampled back from a processing grid computes a scene row from a few processing rows above it
        (:attr:`tiler.scene.AxisMap.reach`); a part streamed widened has them, bit-identical to a whole-scene
        stream, and emits only its own scene rows.

        Parameters
        ----------
        band : RowBand
            From :meth:`row_bands`.
        rows : int
            Extra output rows above, >= 0 (clipped at the scene's first row).

        Returns
        -------
        RowBand
        """
        e0 = max(0, band.emit_rows[0] - int(rows))
        if e0 == band.emit_rows[0]:
            return band
        start = min(band.patch_rows.start, self.rows.touching(e0, e0 + 1).start)
        return RowBand(band.index, band.strips, range(start, band.patch_rows.stop),
                       (self.rows.origin(start), band.read_rows[1]), (e0, band.emit_rows[1]))

    def column_bands(self, band_width: int) -> Iterator[ColumnBand]:
        """Cut the output columns into bands of at most ``band_width`` columns.

        Each band lists every patch column touching it, so a band is computed
        exactly as in a whole-width run; patches at a band boundary are
        predicted once per band they touch.

        Parameters
        ----------
        band_width : int
            Output columns per band (the last band may be narrower), >= 1.

        Yields
        ------
        ColumnBand
            From the left; their ``emit_cols`` partition ``[0, width)``.
        """
        if band_width < 1:
            raise PlanError(f"column band width must be >= 1, got {band_width}")
        cols = self.cols
        for index, start in enumerate(range(0, self.width, band_width)):
            stop = min(self.width, start + band_width)
            patch_cols = cols.touching(start, stop)
            yield ColumnBand(
                index=index,
                patch_cols=patch_cols,
                read_cols=(cols.origin(patch_cols.start),
                           cols.origin(patch_cols.stop - 1) + self.patch_size),
                emit_cols=(start, stop),
            )
