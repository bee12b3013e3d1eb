"""Polygon labels burnt onto training images: the masks they came from are recovered exactly."""

import csv
import json

import numpy as np
import pyogrio.raw
import pytest
import rasterio.features
import shapely
from affine import Affine
from click.testing import CliRunner
from rasterio.crs import CRS
from scipy import ndimage

from tests.conftest import smooth_image, write_tif
from tiler.cli import main
from tiler.errors import DatasetError
from tiler.labels import IGNORE, LabelScheme
from tiler.training import VectorLabels

SCHEME = LabelScheme(("background", "building", "water"), ("#000000", "#FF0000", "#0000FF"))
UTM = CRS.from_epsg(32618)
TRANSFORM = Affine(10.0, 0.0, 435730.0, 0.0, -10.0, 4200000.0)


def _mask(seed, shape=(40, 48)):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random((3,) + shape), (0, 3, 3)).argmax(0).astype(np.uint8)


def _polygons(mask, transform=Affine.identity(), classes=(1, 2)):
    """Oracle side: the regions of a known mask, as GDAL polygonises them."""
    out = []
    for geom, v in rasterio.features.shapes(mask, mask=np.isin(mask, classes), transform=transform):
        out.append((shapely.geometry.shape(geom), int(v)))
    return out


def test_georeferenced_polygons_give_back_the_mask(tmp_path):
    mask = _mask(0)
    polys = _polygons(mask, TRANSFORM)
    path = tmp_path / "labels.gpkg"
    names = np.asarray([SCHEME.names[v] for _, v in polys], object)
    pyogrio.raw.write(path, shapely.to_wkb([g for g, _ in polys]), [names], ["class"], driver="GPKG",
                      geometry_type="Polygon", crs="EPSG:32618")
    got = VectorLabels(path, SCHEME).mask("a.tif", *mask.shape, crs=UTM, transform=TRANSFORM)
    np.testing.assert_array_equal(got, mask)  # uncovered pixels: the scheme's background class
    # An image elsewhere gets no polygon: all background.
    far = Affine(10.0, 0.0, 535730.0, 0.0, -10.0, 4200000.0)
    assert (VectorLabels(path, SCHEME).mask("b.tif", 10, 10, crs=UTM, transform=far) == 0).all()


def test_wkt_csv_by_image_id_in_pixel_coordinates_and_ignore_without_background(tmp_path):
    mask = _mask(1)
    scheme = LabelScheme(("building", "water"), ("#FF0000", "#0000FF"))
    path = tmp_path / "labels.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "class", "multipolygon_wkt"])
        for k, name in ((1, "building"), (2, "water")):
            w.writerow(["im7", name, shapely.MultiPolygon([g for g, v in _polygons(mask) if v == k]).wkt])
    got = VectorLabels(path, scheme).mask("/data/im7.tif", *mask.shape)
    expected = np.where(mask == 0, IGNORE, mask - 1)  # no background class: uncovered pixels are ignored
    np.testing.assert_array_equal(got, expected)
    assert (VectorLabels(path, scheme).mask("other.tif", 5, 5) == IGNORE).all()


def test_bad_label_files_are_refused(tmp_path):
    path = tmp_path / "l.gpkg"
    pyogrio.raw.write(path, shapely.to_wkb([shapely.box(0, 0, 5, 5)]), [np.asarray(["roof"], object)], ["kind"],
                      driver="GPKG", geometry_type="Polygon", crs="EPSG:32618")
    with pytest.raises(DatasetError, match="no field 'class'.*--label-field"):
        VectorLabels(path, SCHEME)
    with pytest.raises(DatasetError, match="class 'roof' is not one of the classes"):
        VectorLabels(path, SCHEME, field="kind").mask("a.tif", 5, 5)


def test_train_from_polygon_labels(tmp_path):
    rows = []
    for split, seed in (("train", 1), ("val", 2)):
        (tmp_path / split).mkdir()
        for i in range(2):
            img = smooth_image(3, 40, 48, seed=seed * 10 + i)
            write_tif(tmp_path / split / f"im{split}{i}.tif", img, crs=None)
            bright = (img[0] > 128).astype(np.uint8)
            geoms = [g for g, _ in _polygons(bright, classes=(1,))]
            rows.append([f"im{split}{i}", "bright", shapely.MultiPolygon(geoms).wkt])
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as f:
        csv.writer(f).writerows([["image_id", "class", "multipolygon_wkt"], *rows])
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"classes": [{"name": "background", "colour": "#000000"},
                                               {"name": "bright", "colour": "#FFFFFF"}]}))
    model = tmp_path / "m.keras"
    r = CliRunner().invoke(main, ["train", str(tmp_path / "train"), "-o", str(model), "--classes", str(classes),
                                  "--labels", str(labels), "--val-images", str(tmp_path / "val"),
                                  "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2",
                                  "--patch-size", "16", "--depth", "2", "--base-filters", "4", "-q"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["train", str(tmp_path / "train"), "-o", str(tmp_path / "x.keras"),
                                  "--classes", str(classes), "--val-images", str(tmp_path / "val")])
    assert r.exit_code == 2 and "--labels POLYGONS" in r.output
