"""Archives by query: a real STAC API (``rustac serve``) searched, results published as valid STAC Items.

The STAC API is started by the tests on a free local port, loaded with Items whose assets are COGs
served over HTTP range requests (tests/servers.py). Oracles: the Items the search must return are
known from how they were made (bbox, datetime, cloud cover); every Item tiler writes is validated
against the core STAC schema (pystac's copy) and the schemas of the extensions it declares (copies in
``tests/stac_schemas``, with their source and version); a mask made through the API is the mask of
the same COG run directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DUBAI, needs_shared
from tests.servers import HttpServer, StacServer, aerial_cog

pytestmark = [needs_shared(DUBAI)]

TILER = str(Path(sys.executable).with_name("tiler"))
SCHEMAS = Path(__file__).resolve().parent / "stac_schemas"
SCHEMA_FILES = {
    "https://stac-extensions.github.io/classification/v1.1.0/schema.json": "classification-v1.1.0.json",
    "https://stac-extensions.github.io/processing/v1.1.0/schema.json": "processing-v1.1.0.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json": "raster-v1.1.0.json",
    "https://stac-extensions.github.io/mlm/v1.5.2/schema.json": "mlm-v1.5.2.json",
}


def validate(item: dict) -> None:
    """Validate an Item against the STAC 1.1.0 Item schema and every extension schema it declares."""
    from jsonschema import Draft7Validator
    from pystac.validation.local_validator import get_local_schema_cache
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    cache = dict(get_local_schema_cache())
    for url, name in SCHEMA_FILES.items():
        cache[url] = json.loads((SCHEMAS / name).read_text())
    registry = Registry().with_resources(
        [(url, Resource.from_contents(doc, default_specification=DRAFT7)) for url, doc in cache.items()]
        + [(url.rstrip("#") + "#", Resource.from_contents(doc, default_specification=DRAFT7))
           for url, doc in cache.items()])
    core = "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json"
    for url in [core, *item.get("stac_extensions", [])]:
        assert url in cache, f"no local copy of the schema {url}"
        errors = sorted(Draft7Validator(cache[url], registry=registry).iter_errors(item), key=str)
        assert not errors, f"{url}: {errors[0].message} at {list(errors[0].absolute_path)}"


COLLECTION = {"type": "Collection", "stac_version": "1.1.0", "id": "aerial", "description": "Dubai aerial COGs",
              "license": "CC0-1.0", "links": [],
              "extent": {"spatial": {"bbox": [[54.0, 24.0, 57.0, 26.0]]},
                         "temporal": {"interval": [["2024-01-01T00:00:00Z", None]]}}}


def stac_item(item_id: str, href: str, *, lon: float, day: str, cloud: float, bands=("red", "green", "blue")) -> dict:
    return {"type": "Feature", "stac_version": "1.1.0", "id": item_id, "collection": "aerial",
            "geometry": {"type": "Polygon", "coordinates": [[[lon, 25.0], [lon + 0.005, 25.0], [lon + 0.005, 25.005],
                                                             [lon, 25.005], [lon, 25.0]]]},
            "bbox": [lon, 25.0, lon + 0.005, 25.005],
            "properties": {"datetime": f"{day}T07:00:00Z", "eo:cloud_cover": cloud},
            "links": [],
            "assets": {"visual_bands": {"href": href, "roles": ["data"],
                                        "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                                        "eo:bands": [{"name": f"b{i + 1}", "common_name": b}
                                                     for i, b in enumerate(bands)]}}}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """Four Items on a STAC API: two match the search below, one is outside its bbox, one too cloudy."""
    root = tmp_path_factory.mktemp("archive")
    www = root / "www"
    www.mkdir()
    aerial_cog(www / "a.tif", 512, seed=1)
    aerial_cog(www / "b.tif", 512, seed=2)
    http = HttpServer(www).start()
    items = [stac_item("june-a", http.url("a.tif"), lon=55.00, day="2024-06-03", cloud=4.0),
             stac_item("june-b", http.url("b.tif"), lon=55.02, day="2024-06-20", cloud=12.5),
             stac_item("june-cloudy", http.url("a.tif"), lon=55.04, day="2024-06-21", cloud=63.0),
             stac_item("june-far", http.url("b.tif"), lon=56.50, day="2024-06-22", cloud=1.0)]
    api = StacServer(root / "api").load(COLLECTION, items)
    try:
        yield {"root": root, "http": http, "api": api, "items": items}
    finally:
        api.stop()
        http.stop()


SEARCH = ["--collection", "aerial", "--bbox", "54.9,24.9,55.3,25.3", "--datetime", "2024-06-01/2024-06-30",
          "--query", "eo:cloud_cover<20"]


def tiler(*args, check=None, env=None):
    full = dict(os.environ, GDAL_HTTP_MAX_RETRY="1", GDAL_HTTP_RETRY_DELAY="0.1", TF_CPP_MIN_LOG_LEVEL="3",
                **(env or {}))
    out = subprocess.run([TILER, *map(str, args)], capture_output=True, text=True, env=full, timeout=600)
    if check is not None:
        assert out.returncode == check, out.stderr[-3000:]
    return out


def test_search_by_bbox_datetime_and_property_returns_exactly_the_matching_items(archive):
    from tiler.catalog import StacSearch, search_items

    found = search_items(StacSearch(api=archive["api"].url, collections=("aerial",), bbox=(54.9, 24.9, 55.3, 25.3),
                                    datetime="2024-06-01/2024-06-30", query=("eo:cloud_cover<20",)))
    assert [i.id for i in found] == ["june-a", "june-b"]
    assert [i.id for i in search_items(StacSearch(api=archive["api"].url, collections=("aerial",), max_items=3))] == [
        "june-a", "june-b", "june-cloudy"]
    listed = tiler("batch", "--stac-api", archive["api"].url, *SEARCH, "--out-dir", archive["root"] / "never",
                   "--list", check=0)
    assert [line.split()[0] for line in listed.stdout.strip().splitlines()] == ["june-a", "june-b"]
    assert not (archive["root"] / "never").exists()


def test_batch_from_a_query_publishes_valid_items_and_skips_what_is_done(archive, tmp_path):
    """A batch over the search writes a mask and a valid STAC Item per result and a catalog; run again it
    skips them all; with one new Item in the API, it runs only that one."""
    out = tmp_path / "masks"
    api = archive["api"]
    tiler("batch", "--stac-api", api.url, *SEARCH, "--out-dir", out, "--report", tmp_path / "r1.json", "-q", check=0)
    assert json.loads((tmp_path / "r1.json").read_text())["counts"] == {"done": 2, "skipped": 0, "failed": 0}
    assert sorted(p.name for p in out.iterdir()) == ["catalog.json", "june-a.json", "june-a.tif", "june-b.json",
                                                     "june-b.tif"]
    item = json.loads((out / "june-a.json").read_text())
    validate(item)
    assert item["id"] == "june-a" and item["properties"]["datetime"] == "2024-06-03T07:00:00Z"
    assert item["geometry"] == archive["items"][0]["geometry"]
    source = next(lk["href"] for lk in item["links"] if lk["rel"] == "derived_from")
    assert source == f"{api.url}/collections/aerial/items/june-a"
    import urllib.request

    with urllib.request.urlopen(source) as resp:  # derived_from resolves to the source Item
        assert json.loads(resp.read())["id"] == "june-a"
    classes = item["assets"]["mask"]["classification:classes"]
    assert [c["name"] for c in classes] == ["building", "land", "road", "vegetation", "water"]
    assert item["properties"]["mlm:input"][0]["bands"] == ["red", "green", "blue"]
    catalog = json.loads((out / "catalog.json").read_text())
    assert sorted(lk["href"] for lk in catalog["links"] if lk["rel"] == "item") == ["./june-a.json", "./june-b.json"]
    # the mask of an Item of the API is the mask of its COG run directly
    tiler("run", archive["http"].url("a.tif"), "-o", tmp_path / "direct.tif", "-q", check=0)
    import rasterio

    with rasterio.open(out / "june-a.tif") as a, rasterio.open(tmp_path / "direct.tif") as b:
        assert (a.read() == b.read()).all()
    tiler("batch", "--stac-api", api.url, *SEARCH, "--out-dir", out, "--report", tmp_path / "r2.json", "-q", check=0)
    assert json.loads((tmp_path / "r2.json").read_text())["counts"] == {"done": 0, "skipped": 2, "failed": 0}
    new = stac_item("june-new", archive["http"].url("b.tif"), lon=55.01, day="2024-06-25", cloud=2.0)
    api.load(COLLECTION, [*archive["items"], new])
    try:
        tiler("batch", "--stac-api", api.url, *SEARCH, "--out-dir", out, "--report", tmp_path / "r3.json", "-q",
              check=0)
    finally:
        api.load(COLLECTION, archive["items"])
    r3 = json.loads((tmp_path / "r3.json").read_text())
    assert r3["counts"] == {"done": 1, "skipped": 2, "failed": 0}
    assert [s["out"] for s in r3["scenes"] if s["status"] == "done"] == [str(out / "june-new.tif")]
    validate(json.loads((out / "june-new.json").read_text()))
    assert len([lk for lk in json.loads((out / "catalog.json").read_text())["links"] if lk["rel"] == "item"]) == 3


def test_run_writes_a_valid_item_and_a_missing_band_fails_alone(archive, tmp_path):
    """``tiler run --stac-item``: a valid Item for one scene; in a batch, an Item that lacks a band the
    model needs fails in the report with the reason and the others run (exit 3)."""
    tiler("run", archive["http"].url("a.tif"), "-o", tmp_path / "m.tif", "--vector", tmp_path / "m.gpkg",
          "--stac-item", tmp_path / "m.json", "-q", check=0)
    item = json.loads((tmp_path / "m.json").read_text())
    validate(item)
    assert item["assets"]["mask"]["href"] == str(tmp_path / "m.tif")
    assert item["assets"]["polygons"]["href"] == str(tmp_path / "m.gpkg")
    lacking = stac_item("no-blue", archive["http"].url("a.tif"), lon=55.03, day="2024-06-05", cloud=1.0,
                        bands=("red", "green", "nir"))
    api = archive["api"]
    api.load(COLLECTION, [*archive["items"], lacking])
    try:
        out = tiler("batch", "--stac-api", api.url, *SEARCH, "--out-dir", tmp_path / "b", "--report",
                    tmp_path / "r.json", "-q", check=3)
    finally:
        api.load(COLLECTION, archive["items"])
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["counts"] == {"done": 2, "skipped": 0, "failed": 1}
    failed = [s for s in report["scenes"] if s["status"] == "failed"][0]
    assert "no-blue" in failed["scene"] and "blue" in failed["error"] and "no-blue" in out.stderr
    assert not (tmp_path / "b" / "no-blue.tif").exists() and not (tmp_path / "b" / "no-blue.json").exists()


def test_search_faults(archive, tmp_path):
    """An API nobody answers: exit 2 naming the URL; an empty search: exit 0, '0 items matched', nothing
    written."""
    dead = HttpServer(tmp_path / "dead")  # a port nobody answers on
    out = tiler("batch", "--stac-api", dead.url(""), "--collection", "aerial", "--out-dir", tmp_path / "o", check=2)
    assert dead.url("") .rstrip("/") in out.stderr and "--stac-api" in out.stderr
    out = tiler("batch", "--stac-api", archive["api"].url, "--collection", "aerial", "--datetime",
                "2023-01-01/2023-01-31", "--out-dir", tmp_path / "o", check=0)
    assert "0 items matched" in out.stderr and not (tmp_path / "o").exists()


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_mlm_description_round_trip(tmp_path):
    """``tiler export --mlm``: a valid MLM Item whose contract read back is the model file's exactly;
    ``--model ITEM.json`` runs the model it describes, also an ONNX file that describes nothing itself
    (the Item is then its description), and refuses an Item that contradicts its file."""
    import onnx

    from tiler.model import DEFAULT_MODEL_PATH, info_from_mlm, read_info

    tiler("export", "default", "-o", tmp_path / "m.onnx", "--mlm", tmp_path / "m.json", "-q", check=0)
    doc = json.loads((tmp_path / "m.json").read_text())
    validate(doc)
    original = read_info(DEFAULT_MODEL_PATH)
    stated = info_from_mlm(doc, "m.json")
    assert stated["channels"] == list(original.channels) and stated["classes"] == list(original.classes)
    assert stated["offset"] == list(original.offset) and stated["scale"] == list(original.scale)
    assert stated["colours"] == list(original.colours) and stated["layout"] == "NCHW"
    scene = Path(__file__).resolve().parents[1] / "examples" / "dubai_sample.tif"
    tiler("run", scene, "-o", tmp_path / "by-item.tif", "--model", tmp_path / "m.json", "-q", check=0)
    tiler("run", scene, "-o", tmp_path / "by-file.tif", "--model", tmp_path / "m.onnx", "-q", check=0)
    assert (tmp_path / "by-item.tif").read_bytes() == (tmp_path / "by-file.tif").read_bytes()
    # the same network with no description of its own: the MLM Item is all tiler knows of it
    bare = onnx.load(tmp_path / "m.onnx")
    del bare.metadata_props[:]
    (tmp_path / "bare").mkdir()
    onnx.save(bare, tmp_path / "bare" / "m.onnx")
    (tmp_path / "bare" / "m.json").write_text(json.dumps(doc))
    out = tiler("run", scene, "-o", tmp_path / "x.tif", "--model", tmp_path / "bare" / "m.onnx", check=2)
    assert "does not say what tiler needs" in out.stderr
    tiler("run", scene, "-o", tmp_path / "by-bare.tif", "--model", tmp_path / "bare" / "m.json", "-q", check=0)
    import rasterio

    with rasterio.open(tmp_path / "by-bare.tif") as a, rasterio.open(tmp_path / "by-file.tif") as b:
        assert (a.read() == b.read()).all()  # the sample scene is not georeferenced: compare the pixels
    wrong = json.loads(json.dumps(doc))
    wrong["properties"]["mlm:output"][0]["classification:classes"][0]["description"] = "roof"
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    out = tiler("run", scene, "-o", tmp_path / "w.tif", "--model", tmp_path / "wrong.json", check=2)
    assert "contradicts its model file" in out.stderr and "roof" in out.stderr


def test_stac_common_names_of_public_archives_reach_the_model(tmp_path):
    """Earth Search and Planetary Computer name Sentinel-2's SWIR bands ``swir16``/``swir22`` and B8A
    ``nir08`` (STAC eo common names): they are the bands tiler's models call ``swir1``/``swir2``/``nir2``."""
    import numpy as np

    from tests.conftest import write_tif
    from tiler.scene import read_stac_item

    assets = {}
    for key, common in (("B11", "swir16"), ("B12", "swir22"), ("B8A", "nir08")):
        write_tif(tmp_path / f"{key}.tif", np.full((1, 8, 8), 100, np.uint16))
        assets[key] = {"href": f"./{key}.tif", "type": "image/tiff; application=geotiff", "roles": ["data"],
                       "eo:bands": [{"name": key, "common_name": common}]}
    item = {"type": "Feature", "stac_version": "1.1.0", "id": "s2", "geometry": None, "links": [],
            "properties": {"datetime": "2024-06-01T00:00:00Z"}, "assets": assets}
    (tmp_path / "item.json").write_text(json.dumps(item))
    layout = read_stac_item(str(tmp_path / "item.json"))
    assert [b.name for g in layout.groups for b in g.bands] == ["swir1", "swir2", "nir2"]
