"""Products GIS users consume: COGs, uint8 probabilities, polygons merged across block seams."""

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from click.testing import CliRunner
from rasterio.errors import NotGeoreferencedWarning
from rio_cogeo.cogeo import cog_validate
from scipy import ndimage

import tiler
from tests.conftest import SENTINEL2, blobs, needs_shared, smooth_image, write_tif
from tests.reference import assert_same_polygons, build_classes_model, polygons_by_class
from tiler.cli import main
from tiler.config import OutputConfig
from tiler.destination import guard_outputs
from tiler.engine import Block
from tiler.sinks import ClassMapSink, OutputContext, Polygonizer, feed

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dubai_sample.tif"
#: A UTM 40N grid of 0.5 m pixels for the (ungeoreferenced) bundled sample.
SAMPLE_TRANSFORM = Affine(0.5, 0.0, 300000.0, 0.0, -0.5, 2800000.0)


@pytest.fixture(scope="module")
def classes_model(tmp_path_factory):
    return build_classes_model(tmp_path_factory.mktemp("models") / "classes.keras")


@pytest.fixture(scope="module")
def sample_scene(tmp_path_factory):
    """The bundled real aerial sample (1817 x 2061, 4 x 5 output tiles), georeferenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(SAMPLE) as ds:
            data = ds.read()
    return write_tif(tmp_path_factory.mktemp("scene") / "sample.tif", data, crs="EPSG:32640",
                     transform=SAMPLE_TRANSFORM, descriptions=["red", "green", "blue"])


FAST = dict(patch_size=256, batch_size=16)


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory, sample_scene, classes_model):
    """One run on the sample: plain class map, COG class map and polygons from the same options."""
    d = tmp_path_factory.mktemp("run")
    plain = tiler.run_scene(sample_scene, d / "plain.tif", model=classes_model, strip_rows=384, band_width=1024,
                            **FAST)
    cog = tiler.run_scene(sample_scene, d / "cog.tif", vector=d / "polys.gpkg", model=classes_model, cog=True,
                          strip_rows=384, band_width=1024, **FAST)
    return d, plain, cog


def test_cog_is_valid_with_mode_overviews_and_the_plain_pixels(sample_run):
    d, _, report = sample_run
    valid, errors, warnings = cog_validate(str(d / "cog.tif"))
    assert valid and not errors and not warnings, (errors, warnings)
    with rasterio.open(d / "plain.tif") as p, rasterio.open(d / "cog.tif") as c:
        assert c.overviews(1) and max(c.width, c.height) / c.overviews(1)[-1] <= 512
        assert c.block_shapes == p.block_shapes == [(512, 512)]
        np.testing.assert_array_equal(c.read(), p.read())
        assert c.crs == p.crs and c.transform == p.transform and c.nodata == p.nodata == 255
        assert c.colormap(1)[1][:3] == (0, 255, 0) and c.tags()["TILER_CLASSES"] == "background,building,water"
        present = set(np.unique(p.read(1)))
        for level in range(len(c.overviews(1))):
            with rasterio.open(d / "cog.tif", overview_level=level) as o:
                # mode resampling: an overview holds only class values of the full resolution
                assert set(np.unique(o.read(1))) <= present
    assert report.out == str(d / "cog.tif") and report.options["output"]["cog"] is True


def test_polygons_of_the_run_equal_polygonising_the_whole_mask(sample_run):
    d, _, report = sample_run
    with rasterio.open(d / "plain.tif") as ds:
        cm = ds.read(1)
        expected = polygons_by_class(cm, cm != 255, [1, 2], transform=ds.transform)
    info = pyogrio.read_info(d / "polys.gpkg")
    assert info["driver"] == "GPKG" and info["geometry_type"] == "MultiPolygon"
    assert rasterio.crs.CRS.from_user_input(info["crs"]) == rasterio.crs.CRS.from_epsg(32640)
    _, _, geoms, fields = pyogrio.raw.read(d / "polys.gpkg")
    names, index, area, perimeter, pixels, mean_p = fields
    assert set(names) == {"building", "water"}  # the background class is not exported by default
    polys = shapely.from_wkb(geoms)
    got = {}
    for g, k in zip(polys, index):
        parts = shapely.get_parts(g)
        got.setdefault(int(k), []).append(parts[0] if len(parts) == 1 else g)
    assert_same_polygons(expected, got)
    np.testing.assert_allclose(area, shapely.area(polys))  # metres² in a metric CRS
    np.testing.assert_allclose(perimeter, shapely.length(polys))
    assert report.vector["features"] == {"building": len(expected[1]), "water": len(expected[2])}
    assert report.vector["units"] == {"area": "m2", "perimeter": "m"}


def _stream(cm, valid, classes, connectivity, strip, band, min_rows=1):
    h, w = cm.shape
    poly = Polygonizer(h, w, classes, connectivity=connectivity, min_rows=min_rows)
    got = {}
    for c0 in range(0, w, band):
        for r0 in range(0, h, strip):
            r1, c1 = min(h, r0 + strip), min(w, c0 + band)
            for k, g, *_ in poly.add(cm[r0:r1, c0:c1], valid[r0:r1, c0:c1], (r0, r1), (c0, c1)):
                got.setdefault(k, []).append(g)
    assert poly.open_count == 0 and not poly.finish()
    return got


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("strip,band", [(16, 1000), (7, 23), (64, 50), (1, 300)])
def test_streamed_polygons_equal_whole_array_shapes(connectivity, strip, band):
    cm = blobs((150, 190), 4, seed=strip + band)
    valid = np.ones(cm.shape, bool)
    valid[40:55, 30:170] = False  # nodata crossing seams
    # a region crossing every strip and band seam: a one-pixel spiral-free frame and a cross
    cm[5, 3:187] = 3
    cm[5:145, 3] = 3
    cm[75, :] = 2
    cm[:, 95] = 2
    expected = polygons_by_class(cm, valid, [1, 2, 3], connectivity=connectivity)
    assert_same_polygons(expected, _stream(cm, valid, [1, 2, 3], connectivity, strip, band))
    # blocks buffered to 40 rows before polygonising: seams every 40 rows only
    assert_same_polygons(expected, _stream(cm, valid, [1, 2, 3], connectivity, strip, band, min_rows=40))


@pytest.mark.parametrize("connectivity", [4, 8])
def test_checkerboards_and_diagonals_across_seams(connectivity):
    rng = np.random.default_rng(connectivity)
    cm = (rng.random((61, 67)) < 0.45).astype(np.uint8)  # many corner-only contacts, holes, seam crossings
    cm[np.arange(61), np.arange(61)] = 1  # a diagonal line: one region with 8-connectivity, 61 with 4
    valid = np.ones(cm.shape, bool)
    expected = polygons_by_class(cm, valid, [1], connectivity=connectivity)
    assert_same_polygons(expected, _stream(cm, valid, [1], connectivity, 8, 10))


@pytest.mark.parametrize("connectivity", [4, 8])
def test_a_region_across_every_seam_keeps_each_of_its_holes(connectivity):
    # One background region over the whole array with a hole every few pixels, next to every seam (rows 15 and
    # 16, 31 and 32 ... on both sides of the strip and band edges), a hole reaching the array's edge (not a
    # hole: a notch), an island of the region inside a hole (a separate region with 4-connectivity), and a
    # hole touching another hole at a corner.
    cm = np.ones((96, 110), np.uint8)
    cm[1::4, 2::5] = 2
    cm[15:17, 40:43] = 2
    cm[31:33, 60:62] = 2
    cm[50:55, 20:25] = 2
    cm[52, 22] = 1  # an island inside a hole
    cm[70:73, 47:50] = 2
    cm[69, 46] = 2  # touching that hole at a corner
    cm[0:3, 80] = 2  # a notch from the edge
    valid = np.ones(cm.shape, bool)
    expected = polygons_by_class(cm, valid, [1, 2], connectivity=connectivity)
    assert max(len(shapely.get_rings(g)) for g in expected[1]) > 300  # the region and its holes
    for strip, band in [(16, 22), (32, 1000), (7, 110)]:
        assert_same_polygons(expected, _stream(cm, valid, [1, 2], connectivity, strip, band))


def test_uint8_probabilities_are_the_float_ones_scaled_with_the_mask(tmp_path, tif, classes_model):
    img = smooth_image(3, 90, 70)
    img[:, :10, :12] = 0
    scene = tif(img, nodata=0)
    f, u = tmp_path / "f.tif", tmp_path / "u.tif"
    tiler.run_scene(scene, f, model=classes_model, output="probability")
    tiler.run_scene(scene, u, model=classes_model, output=OutputConfig(kind="probability", probability_dtype="uint8",
                                                                      cog=True))
    with rasterio.open(f) as a, rasterio.open(u) as b:
        p, q = a.read(), b.read()
        valid = ~np.isnan(p[0])
        assert b.dtypes[0] == "uint8" and b.scales == (1 / 255,) * 3 and b.nodata is None
        np.testing.assert_array_equal(b.read_masks(1) > 0, valid)
        np.testing.assert_array_equal(q[:, valid], np.rint(p[:, valid] * 255).astype(np.uint8))
        assert not valid[:10, :12].any()
    assert cog_validate(str(u))[0]


def test_index_cog(tmp_path, tif):
    img = (smooth_image(2, 600, 530) + 1).astype(np.uint16)
    scene = tif(img, descriptions=["nir", "red"])
    out = tmp_path / "ndvi.tif"
    report = tiler.index_scene(scene, out, ["ndvi"], cog=True)
    assert cog_validate(str(out))[0] and report.options["output"]["cog"]
    with rasterio.open(out) as ds:
        assert ds.overviews(1) == [2] and ds.descriptions == ("ndvi",)


def test_a_failing_sink_leaves_no_output_of_any_sink(tmp_path):
    class Broken:
        def open(self, context):
            pass

        def write(self, block):
            if block.rows[0] > 0:
                raise RuntimeError("sink failed")

        def commit(self):
            pass

        def abort(self):
            self.aborted = True

    cm = np.zeros((64, 64), np.uint8)
    ctx = OutputContext(64, 64, None, None, ("a",))
    blocks = (Block((r, r + 16), (0, 64), np.ones((16, 64), bool), class_map=cm[r:r + 16]) for r in range(0, 64, 16))
    broken = Broken()
    with guard_outputs({"out": tmp_path / "m.tif"}) as guard, pytest.raises(RuntimeError, match="sink failed"):
        feed(blocks, [ClassMapSink(guard["out"]), broken], ctx)
    assert broken.aborted and list(tmp_path.iterdir()) == []








def test_a_part_file_is_compressed_losslessly_where_the_product_is_its_own(tmp_path):
    """A run in parts keeps each part's class map until the assembly: ZSTD (a tenth of a byte per pixel of
    this map of blobs, where it was stored raw at 1 byte), the same pixels read back; the product keeps the
    run's own compression."""
    from tiler.destination import Destination

    cm = blobs((512, 1024), 5, seed=3, sigma=8.0)
    ctx = OutputContext(1024, 512, None, None, tuple("abcde"))
    blocks = [Block((r, r + 128), (0, 1024), np.ones((128, 1024), bool), class_map=cm[r:r + 128])
              for r in range(0, 512, 128)]
    for name, part in (("part.tif", True), ("product.tif", False)):
        feed(iter(blocks), [ClassMapSink(Destination(tmp_path / name, overwrite=False), part=part)], ctx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp_path / "part.tif") as part, rasterio.open(tmp_path / "product.tif") as product:
            assert part.compression.name == "zstd" and product.compression.name == "deflate"
            np.testing.assert_array_equal(part.read(1), cm)
            np.testing.assert_array_equal(product.read(1), cm)
    assert os.path.getsize(tmp_path / "part.tif") < cm.size / 4


def test_simplify_keeps_a_coverage_without_gaps_or_overlaps(tmp_path):
    cm = blobs((200, 200), 3, seed=3, sigma=6)
    mask = write_tif(tmp_path / "m.tif", cm[None], nodata=255)
    out = tmp_path / "s.gpkg"
    tiler_report = __import__("tiler.vectorize", fromlist=["x"]).vectorize_mask(mask, out, simplify=15.0,
                                                                                 strip_rows=64, band_width=90)
    geoms = shapely.from_wkb(pyogrio.raw.read(out)[2])
    raw = sum(len(shapely.get_coordinates(g)) for g in polygons_by_class(cm, np.ones(cm.shape, bool),
                                                                           [0, 1, 2])[0])
    assert sum(tiler_report["features"].values()) == len(geoms)
    total = shapely.union_all(geoms)
    # shared edges kept: the simplified regions still tile the scene exactly
    assert abs(shapely.area(geoms).sum() - total.area) < 1e-3 and abs(total.area - 200 * 200 * 100) < 1e-3
    assert len(shapely.get_coordinates(geoms)) < raw


def test_bad_vector_options_fail_before_any_work(runner, tmp_path, tif, classes_model):
    scene = tif(smooth_image(3, 40, 40))
    for args, message in [(["--vector", str(tmp_path / "p.shp")], "cannot tell the vector format"),
                          (["--vector", str(tmp_path / "p.gpkg"), "--classes", "roof"], "no class 'roof'"),
                          ([], "nothing to write")]:
        r = runner.invoke(main, ["run", scene, "--model", classes_model, *args])
        assert r.exit_code == 2 and message in r.output, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


@needs_shared(SENTINEL2)
def test_cli_run_cog_and_vector_on_real_sentinel2(runner, tmp_path, classes_model):
    from rasterio.windows import Window

    bands = []
    for b in ("B04", "B03", "B02"):
        with rasterio.open(SENTINEL2 / f"s2_{b}.jp2") as ds:
            w = Window(600, 700, 700, 600)
            bands.append(ds.read(1, window=w))
            crs, transform = ds.crs, ds.transform @ Affine.translation(600, 700)
    scene = write_tif(tmp_path / "s2.tif", (np.stack(bands) // 8).clip(0, 255).astype(np.uint8), crs=crs,
                      transform=transform, descriptions=["red", "green", "blue"])
    out, vec, report = tmp_path / "m.tif", tmp_path / "m.gpkg", tmp_path / "r.json"
    r = runner.invoke(main, ["run", scene, "-o", str(out), "--vector", str(vec), "--cog", "--model", classes_model,
                             "--patch-size", "128", "--strip-rows", "100", "--report", str(report)])
    assert r.exit_code == 0, r.output
    assert cog_validate(str(out))[0]
    info = pyogrio.read_info(vec)
    assert rasterio.crs.CRS.from_user_input(info["crs"]) == crs and info["features"] > 0
    with rasterio.open(out) as ds:
        cm = ds.read(1)
        expected = polygons_by_class(cm, cm != 255, [1, 2], transform=ds.transform)
    doc = json.loads(report.read_text())
    assert doc["vector"]["features"] == {"building": len(expected.get(1, [])), "water": len(expected.get(2, []))}


def test_geoparquet_carries_the_geo_metadata(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="GeoParquet needs pyarrow (the test extra installs it)")
    cm = blobs((100, 90), 3, seed=4)
    mask = write_tif(tmp_path / "m.tif", cm[None], nodata=255)
    out = tmp_path / "p.parquet"
    r = CliRunner().invoke(main, ["vectorize", mask, "--out", str(out), "--classes", "1,2"])
    assert r.exit_code == 0, r.output
    table = pq.read_table(out)
    geo = json.loads(table.schema.metadata[b"geo"])
    col = geo["columns"]["geometry"]
    assert geo["primary_column"] == "geometry" and col["encoding"] == "WKB"
    assert rasterio.crs.CRS.from_user_input(json.dumps(col["crs"])) == rasterio.crs.CRS.from_epsg(32618)
    geoms = shapely.from_wkb(table.column("geometry").to_pylist())
    expected = polygons_by_class(cm, np.ones(cm.shape, bool), [1, 2], transform=Affine(10, 0, 435730, 0, -10,
                                                                                        4200000))
    assert len(geoms) == sum(map(len, expected.values()))
    np.testing.assert_allclose(col["bbox"], shapely.total_bounds([g for gs in expected.values() for g in gs]))
    assert table.column("class").to_pylist().count("1") == len(expected[1])


@pytest.mark.slow
def test_done_when_sample_scene_cog_and_geopackage(runner, tmp_path):
    """The issue's acceptance run: the bundled sample, the bundled model, a COG and a GeoPackage."""
    out, vec = tmp_path / "m.tif", tmp_path / "m.gpkg"
    r = runner.invoke(main, ["run", str(SAMPLE), "--out", str(out), "--cog", "--vector", str(vec)])
    assert r.exit_code == 0, r.output
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # the sample has no georeferencing
        assert cog_validate(str(out)) == (True, [], [])
    info = pyogrio.read_info(vec)  # what ogrinfo reports
    assert info["driver"] == "GPKG" and info["geometry_type"] == "MultiPolygon" and info["features"] > 0
    assert info["crs"] is None  # the sample has no georeferencing: polygons in pixel coordinates
    _, _, _, (names, index) = pyogrio.raw.read(vec, columns=["class", "class_index"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(out) as ds:
            classes = ds.tags()["TILER_CLASSES"].split(",")
            present = set(np.unique(ds.read(1))) - {255}
    assert set(index) == present and all(classes[i] == n for i, n in zip(index, names))




# ------------------------------------------------------------------ georeferencing of every kind (issue 21.2/21.3)

@pytest.fixture(scope="module")
def crop():
    """A 300 x 280 crop of the real sample, as (band, row, col) uint8."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(SAMPLE) as ds:
            return ds.read(window=rasterio.windows.Window(600, 900, 280, 300))


def _plain_tif(path, data):
    """A GeoTIFF with no CRS and no transform (an identity one is not written)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return write_tif(path, data, crs=None, transform=Affine.identity())


def _read_polys(path):
    meta, _, geoms, fields = pyogrio.raw.read(path)
    return meta, shapely.from_wkb(geoms), fields


def test_a_scene_georeferenced_by_gcps_keeps_them_and_places_polygons(tmp_path, crop, classes_model):
    """Oracle: the same pixels with the transform the GCPs were computed from."""
    from rasterio.control import GroundControlPoint

    t = Affine(0.5, 0.0, 300000.0, 0.0, -0.5, 2800000.0)
    rows, cols = crop.shape[1:]
    gcps = [GroundControlPoint(r, c, *(t @ (c, r))) for r in (0, rows // 2, rows) for c in (0, cols // 2, cols)]
    write_tif(tmp_path / "affine.tif", crop, crs="EPSG:32640", transform=t)
    gcp = _plain_tif(tmp_path / "gcp.tif", crop)
    with rasterio.open(gcp, "r+") as ds:
        ds.gcps = (gcps, rasterio.crs.CRS.from_epsg(32640))
    runner = CliRunner()
    for name in ("affine", "gcp"):
        r = runner.invoke(main, ["run", str(tmp_path / f"{name}.tif"), "-o", str(tmp_path / f"{name}_m.tif"),
                                 "--vector", str(tmp_path / f"{name}.gpkg"), "--model", classes_model, "-q"])
        assert r.exit_code == 0, r.output
    with rasterio.open(tmp_path / "gcp_m.tif") as m, rasterio.open(tmp_path / "affine_m.tif") as a:
        assert len(m.gcps[0]) == 9 and m.gcps[1].to_epsg() == 32640 and m.crs is None
        np.testing.assert_array_equal(m.read(), a.read())
    meta_a, ga, fa = _read_polys(tmp_path / "affine.gpkg")
    meta_g, gg, fg = _read_polys(tmp_path / "gcp.gpkg")
    assert "32640" in meta_g["crs"] and len(gg) == len(ga) > 0
    for x, y in zip(ga, gg):
        assert shapely.equals_exact(x, y, tolerance=1e-6)
    np.testing.assert_allclose(fg[2], fa[2], rtol=1e-9)  # areas in m²
    text = runner.invoke(main, ["info", gcp]).output
    assert "9 GCPs" in text and "EPSG:32640" in text and "not georeferenced" not in text


def test_a_scene_georeferenced_by_rpcs_keeps_them_and_places_polygons(tmp_path, crop, classes_model):
    """Oracle: the RPC model evaluated by hand (linear coefficients: row follows latitude, column longitude)."""
    from rasterio.rpc import RPC

    rows, cols = crop.shape[1:]
    zero = [0.0] * 20
    rpc = RPC(height_off=10.0, height_scale=100.0, lat_off=25.2, lat_scale=0.001, line_den_coeff=[1.0] + zero[1:],
              line_num_coeff=[0.0, 0.0, -1.0] + zero[3:], line_off=rows / 2, line_scale=rows / 2,
              long_off=55.3, long_scale=0.001, samp_den_coeff=[1.0] + zero[1:],
              samp_num_coeff=[0.0, 1.0] + zero[2:], samp_off=cols / 2, samp_scale=cols / 2)
    path = _plain_tif(tmp_path / "rpc.tif", crop)
    with rasterio.open(path, "r+") as ds:
        ds.rpcs = rpc
    r = CliRunner().invoke(main, ["run", path, "-o", str(tmp_path / "m.tif"), "--vector", str(tmp_path / "p.gpkg"),
                                  "--model", classes_model, "-q"])
    assert r.exit_code == 0, r.output
    with rasterio.open(tmp_path / "m.tif") as m:
        assert m.rpcs is not None and m.rpcs.lat_off == pytest.approx(25.2)
    meta, geoms, fields = _read_polys(tmp_path / "p.gpkg")
    assert "4326" in meta["crs"] and len(geoms) > 0
    lon = lambda c: 55.3 + (c - cols / 2) / (cols / 2) * 0.001  # noqa: E731
    lat = lambda r: 25.2 - (r - rows / 2) / (rows / 2) * 0.001  # noqa: E731
    with rasterio.open(tmp_path / "m.tif") as m:
        classes = m.read(1)
    oracle = polygons_by_class(classes, classes != 255, [1, 2])
    expect = sorted(shapely.area(shapely.transform(g, lambda xy: np.column_stack([lon(xy[:, 0]), lat(xy[:, 1])])))
                    for gs in oracle.values() for g in gs)
    np.testing.assert_allclose(sorted(shapely.area(geoms)), expect, rtol=1e-6)


def test_outputs_without_georeferencing_say_so_and_geojson_is_refused(tmp_path, crop, classes_model):
    path = _plain_tif(tmp_path / "plain.tif", crop)
    runner = CliRunner()
    r = runner.invoke(main, ["run", path, "-o", str(tmp_path / "m.tif"), "--model", classes_model])
    assert r.exit_code == 0, r.output
    notes = [ln for ln in r.output.splitlines() if "no georeferencing" in ln]
    assert len(notes) == 1 and notes[0].startswith("note:") and "pixel coordinates" in notes[0]
    r = runner.invoke(main, ["run", path, "--vector", str(tmp_path / "p.geojson"), "--model", classes_model])
    assert r.exit_code == 2 and "GeoPackage" in r.output and "RFC 7946" in r.output, r.output
    assert sorted(os.listdir(tmp_path)) == ["m.tif", "plain.tif"]


def test_geojson_is_wgs84_longitude_latitude(tmp_path, crop, classes_model):
    """RFC 7946: no crs member, WGS 84 coordinates. Oracle: GDAL's own reprojection of the GeoPackage."""
    from rasterio.warp import transform_geom

    path = write_tif(tmp_path / "utm.tif", crop, crs="EPSG:32640", transform=SAMPLE_TRANSFORM)
    for ext in ("gpkg", "geojson"):
        r = CliRunner().invoke(main, ["run", path, "--vector", str(tmp_path / f"p.{ext}"), "--model", classes_model,
                                      "-q"])
        assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "p.geojson").read_text())
    assert "crs" not in doc
    _, gpkg, fields = _read_polys(tmp_path / "p.gpkg")
    got = [shapely.geometry.shape(f["geometry"]) for f in doc["features"]]
    assert len(got) == len(gpkg) > 0
    for g, f, ref in zip(got, doc["features"], gpkg):
        expect = shapely.geometry.shape(transform_geom("EPSG:32640", "EPSG:4326", shapely.geometry.mapping(ref)))
        assert shapely.equals_exact(g, expect, tolerance=1e-6)
        assert 55 < g.centroid.x < 56 and 25 < g.centroid.y < 26
    assert [f["properties"]["area"] for f in doc["features"]] == pytest.approx(list(fields[2]))


def test_areas_in_a_geographic_crs_are_geodesic_square_metres(tmp_path, crop, classes_model):
    """Oracle: a latitude-longitude cell on the authalic sphere, R^2 dlon (sin lat2 - sin lat1)."""
    deg = 5e-6  # ~0.5 m
    t = Affine(deg, 0.0, 55.3, 0.0, -deg, 25.2)
    path = write_tif(tmp_path / "geo.tif", crop, crs="EPSG:4326", transform=t)
    r = CliRunner().invoke(main, ["run", path, "-o", str(tmp_path / "m.tif"), "--vector", str(tmp_path / "p.gpkg"),
                                  "--model", classes_model, "-q"])
    assert r.exit_code == 0, r.output
    with rasterio.open(tmp_path / "m.tif") as m:
        classes = m.read(1)
    _, geoms, fields = _read_polys(tmp_path / "p.gpkg")
    pixels = sum(int(((classes == k)).sum()) for k in (1, 2))
    lat = np.radians(25.2 - deg * crop.shape[1] / 2)
    cell = 6371007.2 ** 2 * np.radians(deg) * np.cos(lat) * np.radians(deg)  # m² of one pixel
    assert fields[2].sum() == pytest.approx(pixels * cell, rel=5e-3)
    small = np.sort(fields[2])[len(fields[2]) // 2]
    r = CliRunner().invoke(main, ["run", path, "--vector", str(tmp_path / "q.gpkg"), "--model", classes_model,
                                  "--min-area", str(small), "-q"])
    _, _, kept = _read_polys(tmp_path / "q.gpkg")
    assert len(kept[2]) == int((fields[2] >= small).sum()) and kept[2].min() >= small


def test_polygons_carry_pixels_and_mean_probability_equal_to_a_whole_raster_computation(tmp_path, crop,
                                                                                        classes_model):
    """Issue 26: each polygon's ``pixels`` and ``mean_probability`` (of its class), streamed in the same pass,
    equal the whole-raster computation: SciPy's connected components of the class map and the mean of the
    probability raster over each; a run in parts gives the same; --min-probability drops the weak ones."""
    scene = write_tif(tmp_path / "s.tif", crop, crs="EPSG:32640", transform=SAMPLE_TRANSFORM)
    runner = CliRunner()
    r = runner.invoke(main, ["run", scene, "-o", str(tmp_path / "p.tif"), "--output", "probability", "--vector",
                             str(tmp_path / "one.gpkg"), "--model", classes_model, "--strip-rows", "64", "-q"])
    assert r.exit_code == 0, r.output
    with rasterio.open(tmp_path / "p.tif") as ds:
        probs = ds.read()
    valid = ~np.isnan(probs[0])
    cm = np.where(valid, np.nan_to_num(probs, nan=-1).argmax(0), 255)
    _, _, geoms, fields = pyogrio.raw.read(tmp_path / "one.gpkg")
    polys = shapely.from_wkb(geoms)
    assert len(polys) > 10
    labels = {k: ndimage.label(cm == k)[0] for k in (1, 2)}
    for g, k, pixels, mean_p in zip(polys, fields[1], fields[4], fields[5]):
        point = shapely.point_on_surface(g)
        col, row = ~SAMPLE_TRANSFORM @ (point.x, point.y)
        component = labels[int(k)] == labels[int(k)][int(row), int(col)]
        assert pixels == component.sum()
        assert mean_p == pytest.approx(float(probs[int(k)][component].astype(np.float64).mean()), rel=1e-9)
    # in parts, and from the probability raster by `tiler vectorize`: the same numbers
    r = runner.invoke(main, ["run", scene, "-o", str(tmp_path / "c.tif"), "--vector", str(tmp_path / "parts.gpkg"),
                             "--model", classes_model, "--strip-rows", "64", "--parts", "3", "-q"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["vectorize", str(tmp_path / "c.tif"), "--probabilities", str(tmp_path / "p.tif"),
                             "-o", str(tmp_path / "v.gpkg")])
    assert r.exit_code == 0, r.output
    for other in ("parts.gpkg", "v.gpkg"):
        _, _, g2, f2 = pyogrio.raw.read(tmp_path / other)
        order1 = np.lexsort((fields[5], fields[4], fields[1]))
        order2 = np.lexsort((f2[5], f2[4], f2[1]))
        np.testing.assert_array_equal(fields[4][order1], f2[4][order2])
        np.testing.assert_allclose(fields[5][order1], f2[5][order2], rtol=1e-12)
    threshold = float(np.median(fields[5]))
    r = runner.invoke(main, ["vectorize", str(tmp_path / "c.tif"), "--probabilities", str(tmp_path / "p.tif"),
                             "-o", str(tmp_path / "strong.gpkg"), "--min-probability", str(threshold)])
    _, _, _, f3 = pyogrio.raw.read(tmp_path / "strong.gpkg")
    assert len(f3[5]) == int((fields[5] >= threshold).sum()) and f3[5].min() >= threshold
    r = runner.invoke(main, ["vectorize", str(tmp_path / "c.tif"), "-o", str(tmp_path / "bare.gpkg")])
    _, _, _, f4 = pyogrio.raw.read(tmp_path / "bare.gpkg")
    assert np.isnan(f4[5]).all() and (f4[4] > 0).all()  # a bare class map: pixels, no probability
