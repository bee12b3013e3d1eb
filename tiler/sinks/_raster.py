"""GeoTIFF sinks: class map, probabilities, spectral indices; the Cloud-Optimized GeoTIFF finaliser."""

from __future__ import annotations

import logging
import warnings
from typing import Mapping, Optional

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from tiler._logging import quiet_stderr
from tiler.destination import Destination, gdal_messages, write_failure
from tiler.engine import Block
from tiler.errors import OutputVerificationError
from tiler.output import CLASS_NODATA, MaskWriter, check_creation_options
from tiler.sinks._base import OutputContext

__all__ = ["ClassMapSink", "ProbabilitySink", "IndexSink", "to_cog", "COG_RESAMPLING"]

log = logging.getLogger(__name__)

#: Overview resampling per product: ``mode`` for class maps (an overview pixel
#: is the most frequent class below it: no new class values appear), ``average``
#: for probabilities and indices (GDAL's resampling names).
COG_RESAMPLING = {"class": "MODE", "probability": "AVERAGE", "indices": "AVERAGE"}
#: Largest uncompressed intermediate file of a COG, bytes (2 GiB: a 46k x 46k
#: class map); larger rasters stream through ZSTD level 1 (benchmarks/outputs.py).
COG_RAW_INTERMEDIATE_BYTES = 2 * 2**30
#: Scale of uint8 probabilities: stored value = round(probability * 255).
PROBABILITY_UINT8_SCALE = 255
#: GeoTIFF creation options with a COG-driver equivalent (GDAL COG driver
#: documentation, "Creation options"); others apply to the intermediate file only.
_COG_OPTIONS = {"COMPRESS": "COMPRESS", "BIGTIFF": "BIGTIFF", "NUM_THREADS": "NUM_THREADS",
                "ZLEVEL": "LEVEL", "ZSTD_LEVEL": "LEVEL", "JPEG_QUALITY": "QUALITY", "MAX_Z_ERROR": "MAX_Z_ERROR"}


def _cog_options(options: Mapping[str, str], resampling: str) -> dict[str, str]:
    out = {_COG_OPTIONS[k]: v for k, v in options.items() if k in _COG_OPTIONS}
    predictor = options.get("PREDICTOR")
    if predictor is not None:
        out["PREDICTOR"] = {"1": "NO", "2": "STANDARD", "3": "FLOATING_POINT"}.get(predictor, predictor)
    out["BLOCKSIZE"] = options.get("BLOCKXSIZE", "512")
    out.setdefault("NUM_THREADS", "ALL_CPUS")
    out.update(OVERVIEWS="AUTO", RESAMPLING=resampling, OVERVIEW_RESAMPLING=resampling)
    return out


def _intermediate_options(options: Mapping[str, str], profile: Mapping, *,
                          raw_bytes: int = COG_RAW_INTERMEDIATE_BYTES) -> dict[str, str]:
    """Creation options of an intermediate file (the streamed file a COG is built from, a part of a run in
    parts): lossless and fast to write and read.

    Uncompressed up to ``raw_bytes`` (default :data:`COG_RAW_INTERMEDIATE_BYTES`: the COG driver reads its
    intermediate twice, for the overviews, then for the full resolution), ZSTD level 1 above; the tile size
    and BigTIFF choice are the run's. The product itself gets the run's compression. A part is always
    compressed (``raw_bytes=0``): it waits on disk for the assembly, which reads it once, and uncompressed it
    cost 1 byte per pixel of a class map (ZSTD level 1: ~0.03 on the 8192² mosaic, benchmarks/gigapixel.py).
    """
    size = int(profile["width"]) * int(profile["height"]) * int(profile["count"]) * np.dtype(profile["dtype"]).itemsize
    out = {k: v for k, v in options.items() if k in ("TILED", "BLOCKXSIZE", "BLOCKYSIZE", "BIGTIFF")}
    if size <= raw_bytes:
        out["COMPRESS"] = "NONE"
    else:
        out.update(COMPRESS="ZSTD", ZSTD_LEVEL="1", PREDICTOR="3" if np.dtype(profile["dtype"]).kind == "f" else "2")
    return out


def to_cog(src: str, dst: str, *, resampling: str, creation_options: Mapping[str, str]) -> None:
    """Copy a tiled GeoTIFF into a Cloud-Optimized GeoTIFF with GDAL's COG driver.

    Overviews are computed from ``src`` (halving down to one block, at most
    512 pixels), internal and tiled, ordered as the COG layout requires;
    colour table, nodata, per-dataset mask, band descriptions, scales and tags
    are kept. The copy streams through GDAL's block cache (capped by the run's
    ``GDAL_CACHEMAX``): memory stays flat in raster size. Opening the COG
    driver for writing instead would buffer the whole raster.

    Parameters
    ----------
    src : str
        The complete tiled GeoTIFF.
    dst : str
        The COG to write.
    resampling : str
        GDAL overview resampling: ``MODE`` for class maps, ``AVERAGE`` for
        continuous values (:data:`COG_RESAMPLING`).
    creation_options : mapping
        The GeoTIFF creation options of the run; compression, predictor,
        block size and BigTIFF are carried over.

    Raises
    ------
    OSError
        If GDAL fails (a full disk included).

    References
    ----------
    GDAL, "COG -- Cloud Optimized GeoTIFF generator", https://gdal.org/drivers/raster/cog.html;
    Cloud Optimized GeoTIFF specification, https://cogeo.org.
    """
    options = _cog_options({k.upper(): str(v) for k, v in creation_options.items()}, resampling)
    with warnings.catch_warnings(), quiet_stderr():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        rasterio.shutil.copy(src, dst, driver="COG", **options)


class _GeoTIFFSink:
    """Shared machinery of the GeoTIFF sinks: a :class:`MaskWriter`, the COG finaliser."""

    product = "class"

    def __init__(self, destination: Destination, *, creation_options: Optional[Mapping[str, str]] = None,
                 cog: bool = False, part: bool = False, checked: Optional[Mapping[str, str]] = None) -> None:
        self.destination = destination
        self.creation_options = dict(creation_options or {})
        #: The full options as checked where the run was resolved: taken as they are, not checked again.
        self.checked = dict(checked) if checked is not None else None
        self.cog = cog and not part
        self.part = part
        self.writer: Optional[MaskWriter] = None

    # Subclasses: the profile, colour table, descriptions, tags; the block's data.
    def _layout(self, context: OutputContext) -> dict:
        raise NotImplementedError

    def _data(self, block: Block) -> tuple[np.ndarray, Optional[np.ndarray]]:
        raise NotImplementedError

    def open(self, context: OutputContext) -> None:
        """Check the creation options against the product and open the temporary GeoTIFF.

        Raises
        ------
        UsageError
            For creation options GDAL refuses.
        """
        layout = self._layout(context)
        profile = {**context.profile(), **layout.pop("profile")}
        options = self.checked if self.checked is not None else check_creation_options(
            self.creation_options, dtype=profile["dtype"], count=profile["count"])
        self.options = options
        written = (_intermediate_options(options, profile, raw_bytes=0) if self.part
                   else _intermediate_options(options, profile) if self.cog else options)
        self.row_offset = context.row_offset
        self.writer = MaskWriter(self.destination, profile, creation_options=written,
                                 tags={**context.tags, "TILER_OUTPUT": self.product, **layout.pop("tags", {})},
                                 **layout)

    def write(self, block: Block) -> None:
        """Write a block's rows (buffered into whole tile rows)."""
        data, valid = self._data(block)
        rows = (block.rows[0] - self.row_offset, block.rows[1] - self.row_offset)
        self.writer.write_rows(data, rows, block.cols, valid=valid)

    def commit(self) -> None:
        """Close and verify; with ``cog``, copy into a COG and verify it; rename into place.

        Raises
        ------
        DiskFullError, OutputVerificationError, OutputExistsError
            As :meth:`tiler.output.MaskWriter.commit`; nothing is left.
        """
        try:
            plain = self.writer.finish()
            if self.cog:
                cog = self.destination.scratch("cog")
                with gdal_messages() as messages:
                    try:
                        to_cog(plain, cog, resampling=COG_RESAMPLING[self.product],
                               creation_options=self.options)
                    except (OSError, RasterioIOError) as exc:
                        failure = write_failure(exc, self.destination.path, cog, messages=messages)
                        if failure is not None:
                            raise failure from None
                        raise
                _verify_cog(cog, plain)
                self.destination.adopt(cog)
            self.destination.commit()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Remove the temporary files."""
        if self.writer is not None:
            self.writer.abort()
        else:
            self.destination.discard()


def _verify_cog(cog: str, plain: str) -> None:
    """The COG has the plain file's size, bands, georeferencing, and internal overviews."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(cog) as c, rasterio.open(plain) as p:
            problems = []
            if (c.width, c.height, c.count, c.dtypes) != (p.width, p.height, p.count, p.dtypes):
                problems.append("size, bands or dtype differ from the streamed file")
            if c.crs != p.crs or not c.transform.almost_equals(p.transform, precision=1e-9) \
                    or len(c.gcps[0]) != len(p.gcps[0]) or c.gcps[1] != p.gcps[1] \
                    or (c.rpcs is None) != (p.rpcs is None):
                problems.append("georeferencing (transform, GCPs or RPCs) differs from the streamed file")
            if max(c.width, c.height) > c.block_shapes[0][0] and not c.overviews(1):
                problems.append("no overviews")
            if c.nodata != p.nodata and not (np.isnan(c.nodata or 0) and np.isnan(p.nodata or 0)):
                problems.append(f"nodata {c.nodata} != {p.nodata}")
    if problems:
        raise OutputVerificationError(f"Cloud-Optimized GeoTIFF failed verification: {'; '.join(problems)}")


class ClassMapSink(_GeoTIFFSink):
    """The class map: uint8 class index per pixel, colour table, nodata 255.

    Parameters
    ----------
    destination : Destination
        A guarded destination (``.tif``).
    creation_options : mapping, optional
        GeoTIFF creation options (defaults: tiled 512, DEFLATE, predictor).
    cog : bool, default False
        Finish as a Cloud-Optimized GeoTIFF with ``mode`` overviews.
    part : bool, default False
        A part file of a distributed run (:mod:`tiler.distributed`): written
        with fast lossless intermediate options, never a COG.
    checked : mapping, optional
        The full creation options as a resolved run checked them
        (:func:`tiler.output.check_creation_options` for this product's dtype and band count): used as they
        are instead of ``creation_options``.
    """

    product = "class"

    def _layout(self, context: OutputContext) -> dict:
        return {"profile": {"dtype": "uint8", "count": 1, "nodata": CLASS_NODATA},
                "colormap": context.labels.colormap() if context.labels is not None else None,
                "descriptions": ["class"]}

    def _data(self, block: Block):
        return block.class_map(CLASS_NODATA)[None], None


class ProbabilitySink(_GeoTIFFSink):
    """Class probabilities, one band per class.

    Parameters
    ----------
    destination : Destination
    dtype : {"float32", "uint8"}, default "float32"
        float32 with nodata NaN; or uint8 scaled 0-255 (probability = value /
        255, recorded as each band's scale, a quarter of the disk), validity in
        the internal mask band (every uint8 value is a probability).
    creation_options : mapping, optional
    cog : bool, default False
        Finish as a Cloud-Optimized GeoTIFF with ``average`` overviews.
    part : bool, default False
        A part file (see :class:`ClassMapSink`).
    checked : mapping, optional
        Checked creation options (see :class:`ClassMapSink`).
    """

    product = "probability"

    def __init__(self, destination: Destination, *, dtype: str = "float32",
                 creation_options: Optional[Mapping[str, str]] = None, cog: bool = False,
                 part: bool = False, checked: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(destination, creation_options=creation_options, cog=cog, part=part, checked=checked)
        if dtype not in ("float32", "uint8"):
            raise ValueError(f"probability dtype must be float32 or uint8, got {dtype!r}")
        self.dtype = dtype
        self._buf: Optional[np.ndarray] = None

    def _layout(self, context: OutputContext) -> dict:
        k = len(context.band_names)
        layout = {"descriptions": list(context.band_names)}
        if self.dtype == "float32":
            layout["profile"] = {"dtype": "float32", "count": k, "nodata": float("nan")}
        else:
            layout["profile"] = {"dtype": "uint8", "count": k, "nodata": None}
            layout.update(mask=True, scales=[1 / PROBABILITY_UINT8_SCALE] * k,
                          tags={"TILER_PROBABILITY_SCALE": f"1/{PROBABILITY_UINT8_SCALE}"})
        return layout

    def _data(self, block: Block):
        values = block.values()
        if self.dtype == "float32":
            return values, None
        if self._buf is None or self._buf.shape != values.shape:
            self._buf = np.empty(values.shape, np.float32)
        np.multiply(values, PROBABILITY_UINT8_SCALE, out=self._buf)
        np.rint(self._buf, out=self._buf)
        self._buf[:, ~block.valid] = 0
        return self._buf.astype(np.uint8), block.valid


class IndexSink(ProbabilitySink):
    """Spectral indices, one float32 band per index, nodata NaN (``tiler indices``).

    Parameters
    ----------
    destination : Destination
    creation_options : mapping, optional
    cog : bool, default False
        Finish as a Cloud-Optimized GeoTIFF with ``average`` overviews.
    """

    product = "indices"

    def __init__(self, destination: Destination, *, creation_options: Optional[Mapping[str, str]] = None,
                 cog: bool = False) -> None:
        super().__init__(destination, dtype="float32", creation_options=creation_options, cog=cog)
