"""Windowed, resampled reads of a scene: a window of the reference grid (or of a processing grid), every band
group read through GDAL's warper with its registration correction, nodata as the valid-data mask.

:class:`SceneReads` holds the reads; :class:`tiler.scene.Scene` (which opens the files and knows the groups)
inherits them, so that one module is one concept: opening and describing a scene there, reading it here.
"""


from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import numpy as np
import rasterio
import rasterio.warp
from affine import Affine
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioIOError
from rasterio.warp import reproject
from rasterio.windows import Window

from tiler.errors import BandMismatchError, SceneReadError
from tiler.plan import reflect_indices, take_runs
from tiler.scene._bands import BandGroup
from tiler.scene._geometry import _KERNEL_MARGIN, _SAME_SCALE_RTOL, _STAND_IN_CRS, _affine_scale
from tiler.storage import explain, is_url, redact, redact_text

__all__ = ["SceneReads"]


class SceneReads:
    """The reads of a :class:`tiler.scene.Scene`: windows of its grids, each band group resampled onto them.

    A base class of :class:`~tiler.scene.Scene`, which sets what these methods use: its open datasets, its
    band groups and their grids, the reference grid and the registration corrections.
    """

    # --- reading -----------------------------------------------------------------

    def _read_file_bands(self, g: BandGroup, positions: Sequence[int], window: Window,
                         ) -> tuple[np.ndarray, np.ndarray]:
        """Raw bands ``positions`` of group ``g`` in ``window`` of its own grid; NaN where invalid."""
        shape = (int(window.height), int(window.width))
        valid = np.ones(shape, bool)
        by_path: dict[str, list[int]] = {}
        for k, j in enumerate(positions):
            by_path.setdefault(g.bands[j].path, []).append(k)
        if len(by_path) != 1:  # the files' bands are merged; one file's read is the result itself
            out = np.empty((len(positions),) + shape, np.float32)
        floating = False  # integer samples are always finite
        for path, ks in by_path.items():
            ds = self._datasets[path]
            idx = [g.bands[positions[k]].index for k in ks]
            floating |= any(np.dtype(ds.dtypes[i - 1]).kind in "fc" for i in idx)
            try:
                data = ds.read(idx, window=window, out_dtype=np.float32)
                if g.nodata is None:
                    valid &= ds.dataset_mask(window=window) > 0
                    if g.name in self._assumed_fill:
                        valid &= ~(data == self._assumed_fill[g.name]).all(axis=0)
                else:
                    valid &= (data != g.nodata).all(axis=0)
            except RasterioIOError as exc:
                if is_url(path):  # the network or the store, most likely: said as such (exit 1 to retry)
                    raise explain(path, str(exc), f"reading {window!r} of", probe=True) or SceneReadError(
                        f"cannot read {window!r} of {redact(path)}: {redact_text(str(exc))}; the object may be "
                        "truncated or "
                        "corrupt") from None
                raise SceneReadError(
                    f"cannot read {window!r} of {path!r}: {exc}; the file may be truncated or corrupt"
                ) from None
            if len(by_path) == 1:
                out = data  # one file gives every band, in order: no copy
            else:
                out[ks] = data
        if floating:
            valid &= np.isfinite(out).all(axis=0)
        return out, valid

    def nodata(self, name: str) -> Union[None, float, str]:
        """The nodata of band group ``name`` as reads honour it.

        Returns
        -------
        float, str or None
            The group's declared ``nodata`` (manifest, sensor layout), else the
            value assumed from the image content (:meth:`assume_fill`), else the
            files' own nodata value (NaN included), else ``"mask"`` where the
            files carry an internal mask band (or alpha), else None.
        """
        g = self.group(name)
        if g.nodata is not None:
            return float(g.nodata)
        if name in self._assumed_fill:
            return float(self._assumed_fill[name])
        values = {float(v) for p in g.paths for v in self._datasets[p].nodatavals if v is not None}
        if values:
            return min(values, key=lambda v: (not math.isnan(v), v))
        for p in g.paths:
            flags = self._datasets[p].mask_flag_enums
            if any(MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in flags):
                return "mask"
        return None

    def striped(self) -> bool:
        """Whether a band file is read in full-width rows (JPEG, PNG, striped GeoTIFF): no random access.

        Returns
        -------
        bool
            True when any band file's blocks span its whole width, so that a
            small window costs the decoding of whole rows (and for JPEG, of
            every row above it).
        """
        return any(ds.block_shapes and ds.block_shapes[0][1] >= ds.width and ds.width > 1
                   for p, ds in self._datasets.items() if self.cloud_mask is None or p != self.cloud_mask.path)

    def dataset(self, path: str) -> rasterio.io.DatasetReader:
        """The open dataset of one of the scene's files (a band file or the cloud mask)."""
        return self._datasets[path]

    def assume_fill(self, name: str, value: Optional[float]) -> None:
        """Treat ``value`` in every read band of group ``name`` as nodata (None: stop).

        For registration on files with undeclared fill
        (:func:`tiler.registration.detect_fill`); a declared ``nodata`` wins.
        """
        self._check_group(name)
        if value is None:
            self._assumed_fill.pop(name, None)
        else:
            self._assumed_fill[name] = float(value)

    def read_cloud_mask(self, dst_transform: Affine, shape: tuple[int, int]) -> np.ndarray:
        """The product cloud mask on any grid in reference coordinates (nearest neighbour).

        Parameters
        ----------
        dst_transform : affine.Affine
            Destination pixel to reference coordinates.
        shape : tuple of int
            Destination ``(row, col)``.

        Returns
        -------
        ndarray of shape (row, col), bool
            True where the mask says cloud (False outside the mask).

        Raises
        ------
        SceneReadError
            If the scene has no cloud mask, or GDAL fails to read it.
        """
        if self.cloud_mask is None:
            raise SceneReadError(f"scene {self.path!r} has no cloud mask")
        ds = self._datasets[self.cloud_mask.path]
        raw = np.zeros(shape, np.float32)
        crs = self.crs if self.georeferenced and self.crs is not None else _STAND_IN_CRS
        rows, cols = shape
        xs, ys = zip(*((~ds.transform @ (dst_transform @ (c, r))) for c, r in ((0, 0), (cols, 0), (0, rows),
                                                                             (cols, rows))))
        c0, c1 = max(0, math.floor(min(xs)) - 1), min(ds.width, math.ceil(max(xs)) + 1)
        r0, r1 = max(0, math.floor(min(ys)) - 1), min(ds.height, math.ceil(max(ys)) + 1)
        if c1 <= c0 or r1 <= r0:
            return np.zeros(shape, bool)
        try:
            src = ds.read(1, window=Window(c0, r0, c1 - c0, r1 - r0), out_dtype=np.float32)
        except RasterioIOError as exc:
            raise SceneReadError(f"cannot read the cloud mask {self.cloud_mask.path!r}: {exc}") from None
        reproject(src, raw, src_transform=ds.transform @ Affine.translation(c0, r0), src_crs=crs,
                  dst_transform=dst_transform, dst_crs=crs, resampling=Resampling.nearest, src_nodata=None,
                  dst_nodata=0)
        return self.cloud_mask.cloudy(raw.astype(np.uint32))

    def _scale(self, g: BandGroup, positions: Sequence[int], data: np.ndarray) -> None:
        for k, j in enumerate(positions):
            b = g.bands[j]
            if b.scale != 1.0:
                data[k] *= np.float32(b.scale)
            if b.offset != 0.0:
                data[k] += np.float32(b.offset)

    def resampling_for(self, name: str, dst_pixel_size: float) -> str:
        """Resampling a group gets onto a grid of ``dst_pixel_size`` (reference units).

        ``group.resampling`` (default bilinear) when upsampling or at the same
        resolution, ``group.downsampling`` (default average: area-weighted,
        never point-sampled) when the destination is coarser.
        """
        g, grid = self.group(name), self.grid(name)
        ratio = dst_pixel_size / grid.pixel_size
        if ratio > 1.0 + _SAME_SCALE_RTOL:
            return g.downsampling
        return g.resampling

    def warp(self, name: str, dst_transform: Affine, shape: tuple[int, int], *,
             positions: Optional[Sequence[int]] = None, resampling: Optional[str] = None,
             corrected: bool = True, scaled: bool = True, strict: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Resample bands of a group onto any grid in reference coordinates.

        Reads only the source pixels the destination needs (its footprint plus
        the resampling kernel's reach).

        Parameters
        ----------
        name : str
            Band group.
        dst_transform : affine.Affine
            Destination pixel to reference coordinates.
        shape : tuple of int
            Destination ``(row, col)``.
        positions : sequence of int, optional
            0-based bands of the group; default all.
        resampling : str, optional
            rasterio resampling name; default :meth:`resampling_for` the
            destination pixel size. A destination that is the group's own grid
            shifted by whole pixels is copied exactly (nearest).
        corrected : bool, default True
            Apply the group's registration correction.
        scaled : bool, default True
            Apply the bands' radiometric scale and offset.
        strict : bool, default False
            Where the destination is coarser than the group: a destination
            pixel is valid only where every source pixel under it is (GDAL's
            ``min`` of the validity), not where any is (the average of the
            valid ones): a processing grid never labels a scene pixel that was
            nodata.

        Returns
        -------
        bands : ndarray of shape (band, row, col), float32
            NaN where invalid.
        valid : ndarray of shape (row, col), bool
            False where any band is nodata or outside the group's files.

        Raises
        ------
        SceneReadError
            If GDAL fails to read a file.
        """
        g, grid = self.group(name), self.grid(name)
        positions = list(range(len(g.bands))) if positions is None else list(positions)
        rows, cols = shape
        src_t = self.source_transform(name, corrected=corrected)
        to_src = ~src_t @ dst_transform
        xs, ys = zip(*(to_src @ (c, r) for c, r in ((0, 0), (cols, 0), (0, rows), (cols, rows))))
        ratio = _affine_scale(dst_transform) / grid.pixel_size
        margin = math.ceil(_KERNEL_MARGIN * max(1.0, ratio)) + 1
        c0, c1 = max(0, math.floor(min(xs)) - margin), min(grid.width, math.ceil(max(xs)) + margin)
        r0, r1 = max(0, math.floor(min(ys)) - margin), min(grid.height, math.ceil(max(ys)) + margin)
        dst = np.full((len(positions), rows, cols), np.nan, np.float32)
        if c1 <= c0 or r1 <= r0:
            return dst, np.zeros(shape, bool)
        src, src_valid = self._read_file_bands(g, positions, Window(c0, r0, c1 - c0, r1 - r0))
        src[:, ~src_valid] = np.nan
        exact = (abs(to_src.a - 1) < 1e-12 and abs(to_src.e - 1) < 1e-12 and to_src.b == 0 and to_src.d == 0
                 and float(to_src.c).is_integer() and float(to_src.f).is_integer())
        if exact:
            # The destination is the group's own grid shifted by whole pixels: copy.
            dr, dc = int(to_src.f) - r0, int(to_src.c) - c0
            rs, cs = slice(max(0, -dr), min(rows, src.shape[1] - dr)), slice(max(0, -dc), min(cols, src.shape[2] - dc))
            dst[:, rs, cs] = src[:, rs.start + dr:rs.stop + dr, cs.start + dc:cs.stop + dc]
        else:
            method = resampling or self.resampling_for(name, _affine_scale(dst_transform))
            crs = self.crs if self.georeferenced and self.crs is not None else _STAND_IN_CRS
            reproject(src, dst, src_transform=src_t @ Affine.translation(c0, r0), src_crs=crs,
                      dst_transform=dst_transform, dst_crs=crs, src_nodata=np.nan, dst_nodata=np.nan,
                      resampling=Resampling[method])
            if strict and ratio > 1.0 + _SAME_SCALE_RTOL and not src_valid.all():
                everywhere = np.ones(shape, np.uint8)
                reproject(src_valid.astype(np.uint8), everywhere, src_transform=src_t @ Affine.translation(c0, r0),
                          src_crs=crs, dst_transform=dst_transform, dst_crs=crs, src_nodata=None,
                          resampling=Resampling.min)
                dst[:, everywhere == 0] = np.nan
        if scaled:
            self._scale(g, positions, dst)
        return dst, np.isfinite(dst).all(axis=0)

    def read(self, rows: tuple[int, int], cols: tuple[int, int],
             indexes: Sequence[int], *, grid=None) -> tuple[np.ndarray, np.ndarray]:
        """Read a window of the reference grid (or of a processing grid), reflect-padded past the edges.

        Bands of the reference group are read directly; bands of other groups
        are resampled onto the window through their registration correction
        (see :meth:`warp`). Only the pixels inside the scene that the window
        needs are read. On a resampled processing grid every group, the
        reference included, is resampled onto it (averaged where the grid is
        coarser), and a pixel is valid only where every scene pixel it averages
        is.

        Parameters
        ----------
        rows, cols : tuple of int
            ``(start, stop)`` in reference pixels; may reach past the edges,
            where the scene is mirrored (NumPy ``reflect`` mode).
        indexes : sequence of int
            1-based scene band indexes to read, in output order.
        grid : tiler.scene.ProcessingGrid, optional
            Read this grid's pixels (``rows`` and ``cols`` are its own); default the reference grid.

        Returns
        -------
        bands : ndarray of shape (band, row, col), float32
            Radiometrically scaled (``dn * scale + offset`` per band).
        valid : ndarray of shape (row, col), bool
            False where any band read is nodata (GDAL's dataset mask or the
            group's nodata value), not finite, or outside its group's files.

        Raises
        ------
        SceneReadError
            If GDAL fails to read a window (truncated or corrupt file).
        """
        resampled = grid is not None and grid.resampled
        height, width = (grid.height, grid.width) if resampled else (self.height, self.width)
        ridx = reflect_indices(rows[0], rows[1], height)
        cidx = reflect_indices(cols[0], cols[1], width)
        r0, r1 = int(ridx.min()), int(ridx.max()) + 1
        c0, c1 = int(cidx.min()), int(cidx.max()) + 1
        indexes = list(indexes)
        bad = [i for i in indexes if not 1 <= i <= self.count]
        if bad:
            raise BandMismatchError(f"band index(es) {bad} out of range: {self.path!r} has bands 1..{self.count}")
        by_group: dict[str, tuple[BandGroup, list[int], list[int]]] = {}
        for k, i in enumerate(indexes):
            g, j, _ = self._bands[i - 1]
            entry = by_group.setdefault(g.name, (g, [], []))
            entry[1].append(k)
            entry[2].append(j)
        if len(by_group) > 1:  # the groups' reads are merged; one group's read is the result itself
            data = np.empty((len(indexes), r1 - r0, c1 - c0), np.float32)
            valid = np.ones((r1 - r0, c1 - c0), bool)
        for name, (g, ks, positions) in by_group.items():
            if resampled:
                part, v = self.warp(name, grid.transform @ Affine.translation(c0, r0), (r1 - r0, c1 - c0),
                                    positions=positions, strict=True)
            elif name == self.reference:
                part, v = self._read_file_bands(g, positions, Window(c0, r0, c1 - c0, r1 - r0))
                self._scale(g, positions, part)
            else:
                part, v = self.warp(name, self.transform @ Affine.translation(c0, r0), (r1 - r0, c1 - c0),
                                    positions=positions)
            if len(by_group) == 1:
                data, valid = part, v
            else:
                data[ks] = part
                valid &= v
        contiguous = (r0 == rows[0] and r1 == rows[1] and c0 == cols[0] and c1 == cols[1])
        if not contiguous:  # the mirrored margins: copied run by run, not gathered pixel by pixel
            data = take_runs(data, ridx - r0, cidx - c0)
            valid = take_runs(valid, ridx - r0, cidx - c0)
        return data, valid
