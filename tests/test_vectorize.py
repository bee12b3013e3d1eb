"""Polygons of a class map (tiler.vectorize, tiler vectorize): formats, options, attributes."""


import numpy as np
import pyogrio
import pytest
import shapely
from click.testing import CliRunner

from tests.conftest import blobs, write_tif
from tests.reference import polygons_by_class
from tiler.cli import main


@pytest.mark.parametrize("ext,driver", [(".geojson", "GeoJSON"), (".fgb", "FlatGeobuf")])
def test_vectorize_formats_options_and_attributes(tmp_path, ext, driver):
    cm = blobs((300, 260), 3, seed=1, sigma=5)
    cm[:4, :4] = 2  # a 16-pixel region: 1600 m² at 10 m pixels
    cm[4, :5] = 0
    cm[:4, 4] = 0
    mask = write_tif(tmp_path / "m.tif", cm[None], nodata=255)
    out = tmp_path / f"p{ext}"
    r = CliRunner().invoke(main, ["vectorize", mask, "--out", str(out), "--classes", "2", "--min-area", "2000"])
    assert r.exit_code == 0, r.output
    assert pyogrio.read_info(out)["driver"] == driver
    _, _, geoms, (names, index, area, *_) = pyogrio.raw.read(out)
    expected = [g for g in polygons_by_class(cm, np.ones(cm.shape, bool), [2])[2] if g.area * 100 >= 2000]
    assert len(geoms) == len(expected) and set(names) == {"2"} and (area >= 2000).all()
    assert not any(abs(a - 1600) < 1e-6 for a in area)


def test_wkt_csv_has_one_multipolygon_per_class(tmp_path):
    cm = blobs((120, 100), 3, seed=2)
    mask = write_tif(tmp_path / "m.tif", cm[None], nodata=255)  # 10 m pixels
    out = tmp_path / "sub.csv"
    r = CliRunner().invoke(main, ["vectorize", mask, "--out", str(out)])
    assert r.exit_code == 0, r.output
    import csv

    with out.open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image_id", "class", "multipolygon_wkt"] and [row[1] for row in rows[1:]] == ["0", "1", "2"]
    for row in rows[1:]:
        k = int(row[1])
        g = shapely.from_wkt(row[2])
        expected = polygons_by_class(cm, np.ones(cm.shape, bool), [k])[k]
        assert row[0] == "m" and g.geom_type == "MultiPolygon" and len(g.geoms) == len(expected)
        assert abs(g.area - (cm == k).sum() * 100) < 1e-3


def test_vectorize_of_a_0_255_mask_exports_the_two_values_present(tmp_path):
    """Issue 21.14: a 0/255 footprint mask printed 256 value counts."""
    mask = np.zeros((1, 64, 64), np.uint8)
    mask[0, 10:20, 10:30] = 255
    mask[0, 40:50, 5:15] = 255
    path = write_tif(tmp_path / "fp.tif", mask)
    r = CliRunner().invoke(main, ["vectorize", path, "-o", str(tmp_path / "fp.gpkg")])
    assert r.exit_code == 0, r.output
    assert "255 2" in r.output and "0 1" in r.output and "254" not in r.output, r.output
