"""Re-create ``examples/dubai_sample.tif`` from the shared Dubai aerial data.

Source: "Semantic segmentation of aerial imagery" (Humans in the Loop; imagery
of Dubai from MBRSC satellites), CC0 1.0, tile 7, image_part_001.jpg: a tile
the default model was validated on and never trained on.

The image is stored as a tiled, JPEG-compressed (YCbCr, quality 90) GeoTIFF.
It has no georeferencing, like its source.

Usage: python examples/make_sample.py [SHARED_DATA_DIR]
"""

import os
import sys
import warnings

import rasterio
from rasterio.errors import NotGeoreferencedWarning

HERE = os.path.dirname(os.path.abspath(__file__))
shared = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "shared", "data")
src_path = os.path.join(shared, "dubai_aerial", "tile_7", "images", "image_part_001.jpg")

with warnings.catch_warnings():
    warnings.simplefilter("ignore", NotGeoreferencedWarning)
    with rasterio.open(src_path) as src:
        data = src.read()
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": 3,
               "dtype": "uint8", "tiled": True, "blockxsize": 256, "blockysize": 256,
               "compress": "jpeg", "photometric": "ycbcr", "jpeg_quality": 90}
    with rasterio.open(os.path.join(HERE, "dubai_sample.tif"), "w", **profile) as dst:
        dst.write(data)
