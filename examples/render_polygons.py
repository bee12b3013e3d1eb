"""Render the polygons of ``tiler run --vector`` over the bundled sample scene, to a PNG.

Runs the bundled model on ``examples/dubai_sample.tif`` once (class map and
polygons in one pass), then draws each polygon's outline in its class colour
over the RGB image (``rasterio.features.rasterize`` of the polygon boundaries)
and writes ``docs/assets/polygons.png`` (a crop at full resolution) with GDAL's
PNG driver. The README shows the result.

Usage::

    python examples/render_polygons.py [--out docs/assets/polygons.png] [--min-area 30]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings

import numpy as np
import pyogrio.raw
import rasterio
import rasterio.features
import shapely
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

import tiler
from tiler.model import read_info
from tiler.model._file import DEFAULT_MODEL_PATH

HERE = os.path.dirname(os.path.abspath(__file__))
#: The crop shown: rows, cols of the sample scene (buildings, roads, a pond, golf-course green).
CROP = Window(col_off=300, row_off=700, width=900, height=700)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "..", "docs", "assets", "polygons.png"))
    ap.add_argument("--min-area", type=float, default=30.0, help="drop regions smaller than this (pixels)")
    args = ap.parse_args()
    scene = os.path.join(HERE, "dubai_sample.tif")
    with tempfile.TemporaryDirectory() as tmp:
        vec = os.path.join(tmp, "polygons.gpkg")
        report = tiler.run_scene(scene, vector=vec, min_area=args.min_area, simplify=1.0)
        print(f"{sum(report.vector['features'].values())} polygons: {report.vector['features']}")
        _, _, wkb, fields = pyogrio.raw.read(vec, bbox=(CROP.col_off, CROP.row_off, CROP.col_off + CROP.width,
                                                          CROP.row_off + CROP.height))
    geoms, classes = shapely.from_wkb(wkb), fields[1]
    colours = read_info(DEFAULT_MODEL_PATH).labels.colormap()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(scene) as ds:
            rgb = ds.read(window=CROP)
    # Polygons are in pixel coordinates (the sample has no georeferencing): shift them onto the crop.
    outlines = shapely.transform(shapely.boundary(geoms), lambda xy: xy - [CROP.col_off, CROP.row_off])
    image = (rgb.astype(np.float32) * 0.8).astype(np.uint8)  # dim the image so the outlines stand out
    for k, rgba in colours.items():
        lines = [g for g, c in zip(outlines, classes) if c == k]
        if not lines:
            continue
        burnt = rasterio.features.rasterize(((g, 1) for g in lines), out_shape=rgb.shape[1:], all_touched=True,
                                            dtype="uint8").astype(bool)
        for band in range(3):
            image[band][burnt] = rgba[band]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(args.out, "w", driver="PNG", width=image.shape[2], height=image.shape[1], count=3,
                           dtype="uint8") as dst:
            dst.write(image)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
