"""Polygon labels rasterised onto training images: ``tiler train --labels polygons.gpkg``.

Polygon-labelled data (building footprints, water bodies, the WKT CSV of
``tiler run --vector``) trains without a separate conversion step: each
image's label mask is burnt from the polygons with
``rasterio.features.rasterize`` on the image's own grid.
"""

from __future__ import annotations

import csv
import os
import sys
import warnings
from typing import Optional, Union

import numpy as np
import rasterio.features
import shapely
from affine import Affine

from tiler.errors import DatasetError
from tiler.labels import IGNORE, LabelScheme

__all__ = ["VectorLabels"]

#: Columns of the submission-style WKT CSV (``tiler run --vector out.csv``).
WKT_CSV_COLUMNS = ("image_id", "class", "multipolygon_wkt")


class VectorLabels:
    """Polygons with a class field, burnt into a label mask per image.

    Parameters
    ----------
    path : path-like
        Any vector file pyogrio reads (GeoPackage, GeoJSON, FlatGeobuf,
        Shapefile, ...) or a WKT CSV with columns ``image_id, class,
        multipolygon_wkt`` (one row per image and class).
    labels : LabelScheme
        The classes; a polygon's class field holds a class name (any case) or
        a class index.
    field : str, default "class"
        The attribute holding each polygon's class (ignored for a WKT CSV).

    Notes
    -----
    Georeferenced images take the polygons that intersect their bounds,
    reprojected from the file's CRS where it differs; images without
    georeferencing take polygons in pixel coordinates (x = column, y = row),
    from a WKT CSV the rows whose ``image_id`` is the image's file stem.
    Pixels no polygon covers get the background class where the scheme names
    one (:attr:`LabelScheme.background`), else are ignored in losses and metrics.
    Where polygons overlap, the later one wins (file order).

    Raises
    ------
    DatasetError
        If the file cannot be read, has no such field, or names a class the
        scheme does not have.
    """

    def __init__(self, path: Union[str, os.PathLike], labels: LabelScheme, *, field: str = "class") -> None:
        self.path = os.fspath(path)
        self.labels = labels
        self.field = field
        self.background = labels.background
        self.csv = self.path.lower().endswith(".csv")
        self._by_image: dict[str, list] = {}
        if not os.path.exists(self.path):
            raise DatasetError(f"label file {self.path!r} does not exist")
        if self.csv:
            self._read_csv()
        else:
            import pyogrio

            try:
                info = pyogrio.read_info(self.path)
            except Exception as exc:  # pyogrio raises its own DataSourceError types
                raise DatasetError(f"cannot read label file {self.path!r}: {exc}") from None
            if field not in list(info["fields"]):
                raise DatasetError(f"label file {self.path!r} has no field {field!r}; its fields: "
                                   f"{', '.join(info['fields'])}. Pass --label-field NAME")
            self.crs = info["crs"]

    def _class_index(self, value) -> int:
        names = [n.lower() for n in self.labels.names]
        text = str(value).strip()
        if text.lower() in names:
            return names.index(text.lower())
        try:
            k = int(float(text))
        except ValueError:
            k = -1
        if 0 <= k < len(names):
            return k
        raise DatasetError(f"label file {self.path!r}: class {value!r} is not one of the classes "
                           f"{', '.join(self.labels.names)} (by name or index)")

    def _read_csv(self) -> None:
        csv.field_size_limit(sys.maxsize)  # a MultiPolygon of a whole image is one long field
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            head = next(reader, None)
            if head is None or tuple(h.strip().lower() for h in head[:3]) != WKT_CSV_COLUMNS:
                raise DatasetError(f"{self.path!r} is not a WKT label CSV: its header must be "
                                   f"{','.join(WKT_CSV_COLUMNS)}, got {head}")
            for row in reader:
                image, cls, wkt = row[:3]
                try:
                    geom = shapely.from_wkt(wkt)
                except shapely.errors.GEOSException as exc:
                    raise DatasetError(f"{self.path!r}: bad WKT for image {image!r}, class {cls!r}: {exc}") from None
                self._by_image.setdefault(image, []).append((geom, self._class_index(cls)))
        self.crs = None

    def _shapes(self, stem: str, bounds, crs) -> list:
        if self.csv:
            return self._by_image.get(stem, [])
        import pyogrio.raw

        bbox = None
        if crs is not None and self.crs is not None:
            from rasterio.warp import transform_bounds

            bbox = tuple(transform_bounds(crs, self.crs, *bounds))
        elif crs is None:
            bbox = tuple(bounds)
        meta, _, geoms, fields = pyogrio.raw.read(self.path, columns=[self.field], bbox=bbox)
        geoms = shapely.from_wkb(geoms)
        if crs is not None and self.crs is not None and rasterio.crs.CRS.from_user_input(self.crs) != crs:
            from rasterio.warp import transform_geom

            geoms = [shapely.geometry.shape(transform_geom(self.crs, crs, shapely.geometry.mapping(g)))
                     for g in geoms]
        return [(g, self._class_index(v)) for g, v in zip(geoms, fields[0]) if g is not None]

    def mask(self, image: str, height: int, width: int, *, crs=None,
             transform: Optional[Affine] = None) -> np.ndarray:
        """The label mask of one image.

        Parameters
        ----------
        image : str
            The image's path (its stem is its ``image_id`` in a WKT CSV).
        height, width : int
            The image's size in pixels.
        crs : rasterio.crs.CRS, optional
            The image's CRS; None: not georeferenced (pixel coordinates).
        transform : affine.Affine, optional
            The image's transform (with ``crs``).

        Returns
        -------
        ndarray of shape (row, col), uint8
            Class index per pixel; the background class or :data:`IGNORE`
            where no polygon lies.
        """
        from rasterio.transform import array_bounds

        georef = crs is not None and transform is not None
        t = transform if georef else Affine.identity()
        west, south, east, north = array_bounds(height, width, t)
        bounds = (min(west, east), min(south, north), max(west, east), max(south, north))
        shapes = self._shapes(os.path.splitext(os.path.basename(image))[0], bounds, crs if georef else None)
        fill = IGNORE if self.background is None else self.background
        if not shapes:
            return np.full((height, width), fill, np.uint8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.ShapeSkipWarning)
            return rasterio.features.rasterize(shapes, out_shape=(height, width), transform=t, fill=fill,
                                               dtype="uint8")
