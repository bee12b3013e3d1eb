"""The GeoTIFF writer (tiler.output): tiling, compression, colour table, file mode, creation options."""

import os

import numpy as np
import rasterio

import tiler
from tests.conftest import smooth_image


def test_output_is_a_tiled_compressed_class_map_with_colour_table(tmp_path, tif, tiny_model):
    out = tmp_path / "c.tif"
    tiler.run_scene(tif(smooth_image(3, 70, 90)), out, model=tiny_model,
                    creation_options=["COMPRESS=ZSTD"])
    with rasterio.open(out) as ds:
        assert ds.dtypes == ("uint8",) and ds.count == 1 and ds.nodata == 255
        assert ds.profile["tiled"] and ds.block_shapes[0] == (512, 512)
        assert ds.compression.name.lower() == "zstd"
        assert ds.colormap(1)[0] == (255, 0, 0, 255)
        assert ds.tags()["TILER_CLASSES"] == "a,b,c"
        assert set(np.unique(ds.read(1))) <= {0, 1, 2}


def test_output_gets_the_usual_file_mode(tmp_path, tif, tiny_model):
    out = tmp_path / "m.tif"
    tiler.run_scene(tif(smooth_image(3, 20, 20)), out, model=tiny_model)
    umask = os.umask(0o022)
    os.umask(umask)
    assert (out.stat().st_mode & 0o777) == (0o666 & ~umask)


