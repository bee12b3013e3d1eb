"""`tiler view` (issue 26): one offline HTML page, opened in a real headless Chromium with the network blocked.

Checked in the browser: the page ran (``data-ready``), the map shows the scene and every class image, the
polygons are drawn one path each, a screenshot is not blank and shows the class colours, and Chromium's own
network log has no request the page made (its background requests, which carry no page origin, aside).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from tests.conftest import write_tif
from tests.reference import build_classes_model
from tiler.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dubai_sample.tif"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (apt-get install chromium)")
#: Chromium without its own background traffic, every host name unresolvable.
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,800", "--virtual-time-budget=8000",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-default-apps", "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND"]


def _browse(page: Path, tmp: Path) -> tuple[str, np.ndarray, list]:
    net = tmp / "net.json"
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--log-net-log={net}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=180).stdout
    shot = tmp / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=180)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"))
    log = json.loads(net.read_text())
    types = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    page_requests = [e["params"].get("url") for e in log["events"]
                     if types[e["type"]] == "URL_REQUEST_START_JOB"
                     and e.get("params", {}).get("initiator") != "not an origin"
                     and not str(e.get("params", {}).get("url", "file:")).startswith(("file:", "data:"))]
    return dom, pixels, page_requests


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run of a crop of the real sample with a classes model: mask, polygons, report, georeferenced."""
    d = tmp_path_factory.mktemp("view")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(SAMPLE) as ds:
            data = ds.read(window=rasterio.windows.Window(300, 300, 600, 500))
    from affine import Affine

    scene = write_tif(d / "scene.tif", data, crs="EPSG:32640", transform=Affine(0.5, 0, 300000, 0, -0.5, 2800000))
    model = build_classes_model(d / "classes.keras")
    from click.testing import CliRunner

    r = CliRunner().invoke(main, ["run", scene, "-o", str(d / "m.tif"), "--vector", str(d / "p.gpkg"), "--model",
                                  model, "--report", str(d / "r.json"), "--html", str(d / "run.html"), "-q"])
    assert r.exit_code == 0, r.output
    return d, scene


@needs_browser
def test_the_page_renders_offline_with_every_layer_and_polygon(run, tmp_path, runner):
    d, scene = run
    page = tmp_path / "page.html"
    r = runner.invoke(main, ["view", str(d / "m.tif"), "--scene", scene, "--vector", str(d / "p.gpkg"), "--report",
                             str(d / "r.json"), "-o", str(page)])
    assert r.exit_code == 0, r.output
    text = page.read_text()
    assert page.stat().st_size < 5e6 and "http://" not in text.split("<script>")[0]
    data = json.loads(re.search(r"const DATA = (\{.*?\});\n", text, re.S).group(1))
    dom, pixels, requests = _browse(page, tmp_path)
    assert 'data-ready="1"' in dom, dom[-2000:]
    images = re.findall(r'<img[^>]*class="[^"]*leaflet-image-layer', dom)
    # The scene and one image per class, but for a background class, which starts hidden (a cloud mask's
    # "clear" painted the whole page green).
    assert len(images) == 1 + sum(1 for layer in data["layers"] if layer["shown"])
    assert [layer["class"] for layer in data["layers"] if not layer["shown"]] == ["background"]
    assert dom.count('<path class="leaflet-interactive') == len(data["polygons"]["features"]) > 0
    assert requests == []  # nothing left the machine
    assert pixels.std() > 20  # not blank
    assert "Patch grid" in dom and "Seconds per stage" in dom and "mean probability" in text


@needs_browser
def test_run_html_writes_the_page_of_the_run(run, tmp_path):
    d, _ = run
    dom, pixels, requests = _browse(d / "run.html", tmp_path)
    assert 'data-ready="1"' in dom and requests == [] and pixels.std() > 20
    assert "leaflet-interactive" in dom and "Patch grid" in dom


def test_a_scene_of_another_grid_is_refused(run, tmp_path, runner):
    d, _ = run
    other = write_tif(tmp_path / "other.tif", np.zeros((3, 10, 10), np.uint8))
    r = runner.invoke(main, ["view", str(d / "m.tif"), "--scene", other, "-o", str(tmp_path / "x.html")])
    assert r.exit_code == 2 and "the mask" in r.output and not (tmp_path / "x.html").exists()


def _page_scene_image(page_text: str) -> np.ndarray:
    import base64
    import io

    from PIL import Image

    data = json.loads(re.search(r"const DATA = (\{.*?\});\n", page_text, re.S).group(1))
    assert data["scene"] and data["scene"].startswith("data:image/jpeg;base64,")
    raw = base64.b64decode(data["scene"].split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")).astype(float)


def test_a_manifest_scene_shows_its_rgb_group_on_the_mask_grid(tmp_path, runner):
    """A two-group manifest (RGB at 2 m, a pan band at 1 m) and a mask on the RGB grid (``--reference ms``): the
    page's scene is the RGB group's own pixels (oracle: the same bands stretched by hand), not the pan band."""
    from affine import Affine

    rng = np.random.default_rng(3)
    rows, cols = np.mgrid[0:60, 0:80]
    rgb = np.stack([rows * 4, cols * 3, (rows + cols) * 2]).astype(np.uint16) + rng.integers(0, 3, (3, 60, 80))
    write_tif(tmp_path / "ms.tif", rgb.astype(np.uint16), transform=Affine(2, 0, 500000, 0, -2, 4000000))
    write_tif(tmp_path / "pan.tif", rng.integers(0, 1000, (1, 120, 160)).astype(np.uint16),
              transform=Affine(1, 0, 500000, 0, -1, 4000000))
    (tmp_path / "s.toml").write_text('[groups.ms]\nfiles = ["ms.tif"]\nbands = ["red", "green", "blue"]\n'
                                     '[groups.pan]\nfiles = ["pan.tif"]\nbands = ["pan"]\n')
    mask = write_tif(tmp_path / "m.tif", (rgb[:1] % 3).astype(np.uint8), transform=Affine(2, 0, 500000, 0, -2,
                                                                                            4000000))
    page = tmp_path / "p.html"
    r = runner.invoke(main, ["view", mask, "--scene", str(tmp_path / "s.toml"), "-o", str(page)])
    assert r.exit_code == 0, r.output
    shown = _page_scene_image(page.read_text())
    assert shown.shape == (60, 80, 3)
    for k in range(3):
        band = rgb[k].astype(float)
        lo, hi = np.percentile(band, [2, 98])
        expected = np.clip((band - lo) / (hi - lo) * 255, 0, 255)
        assert np.corrcoef(shown[..., k].ravel(), expected.ravel())[0, 1] > 0.98
        assert np.abs(shown[..., k] - expected).mean() < 6  # JPEG's loss only

    # A mask of neither group's size: refused, naming the groups' sizes, nothing written.
    small = write_tif(tmp_path / "small.tif", np.zeros((1, 10, 10), np.uint8))
    r = runner.invoke(main, ["view", small, "--scene", str(tmp_path / "s.toml"), "-o", str(tmp_path / "x.html")])
    assert r.exit_code == 2 and "ms 80x60" in r.output and not (tmp_path / "x.html").exists()
