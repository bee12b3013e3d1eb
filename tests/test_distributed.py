"""Scale-out (issue 11): parts, journal, resume, batches on a real dask LocalCluster.

Oracles: a one-process :func:`tiler.run_scene` of the same scene (the
single-process stream), rasterio reads of the files, and the journal as
written on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

from tests.conftest import DUBAI, SENTINEL2, needs_shared, smooth_image, write_tif
from tiler import distributed
from tiler.distributed import FINGERPRINT_TAG, Journal, work_folder
from tiler.pipeline import run_scene
from tiler.plan import PatchGrid

PROJECT = Path(__file__).resolve().parents[1]


def _read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        ds = rasterio.open(path)
    with ds:
        data = ds.read()
        mask = ds.read_masks(1)
        profile = dict(ds.profile)
        tags = {k: v for k, v in ds.tags().items() if k != FINGERPRINT_TAG}
        meta = {"colormap": ds.colormap(1) if ds.count == 1 and profile["dtype"] == "uint8" else None,
                "descriptions": ds.descriptions, "scales": ds.scales, "tags": tags}
    profile.pop("nodata", None)  # NaN != NaN; compared through the data and masks
    return data, mask, profile, meta


def assert_same_raster(a, b):
    da, ma, pa, xa = _read(a)
    db, mb, pb, xb = _read(b)
    assert pa == pb
    assert xa == xb
    np.testing.assert_array_equal(ma, mb)
    assert da.tobytes() == db.tobytes()  # bit-identical, NaN included


@pytest.fixture(scope="module")
def client():
    """A real dask.distributed LocalCluster: 2 worker processes, one thread each."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=40) as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene")
    return write_tif(folder / "scene.tif", smooth_image(3, 900, 260, seed=4))


# ------------------------------------------------------------------ row bands (pure arithmetic)

@pytest.mark.parametrize("height,patch,stride,strip_rows,parts", [
    (900, 32, 16, 64, 4), (1000, 64, 48, 100, 3), (517, 32, 32, 32, 7), (300, 32, 16, 512, 5)])
def test_row_bands_partition_rows_and_carry_every_touching_patch(height, patch, stride, strip_rows, parts):
    grid = PatchGrid(height, 50, patch, stride)
    bands = grid.row_bands(strip_rows, parts)
    strips = list(grid.strips(strip_rows))
    assert len(bands) == min(parts, len(strips))
    assert bands[0].emit_rows[0] == 0 and bands[-1].emit_rows[1] == height
    for a, b in zip(bands, bands[1:]):
        assert a.emit_rows[1] == b.emit_rows[0]
    origins = grid.rows.origins()
    for band in bands:
        e0, e1 = band.emit_rows
        # every patch covering a row of the band is computed, and no later one is needed
        touching = [i for i, o in enumerate(origins) if o < e1 and o + patch > e0]
        assert set(touching) <= set(band.patch_rows)
        got = list(grid.strips(strip_rows, band))
        assert got[0].index == 0 and got[0].patch_rows.start == band.patch_rows.start
        assert got[0].emit_rows[0] == e0 and got[-1].emit_rows[1] == e1


# ------------------------------------------------------------------ parts == one-process stream

@pytest.mark.parametrize("output,dtype,parts", [("probability", "float32", 4), ("probability", "uint8", 3),
                                                ("class", "float32", 5)])
def test_parts_in_process_are_bit_identical_to_one_stream(tmp_path, scene, tiny_model, output, dtype, parts):
    one = run_scene(scene, tmp_path / "one.tif", model=tiny_model, output=output, probability_dtype=dtype,
                    strip_rows=64)
    rep = distributed.run(scene, tmp_path / "parts.tif", model=tiny_model, output=output, probability_dtype=dtype,
                          strip_rows=64, parts=parts)
    assert rep.parts["total"] == parts and rep.parts["computed"] == parts and rep.parts["reused"] == 0
    assert_same_raster(one.out, rep.out)
    # One report builder: a run in parts reports what one stream reports.
    assert rep.model["runtime"] == one.model["runtime"] and rep.model["precision"] == one.model["precision"]
    assert rep.patches["skipped_nodata"] == one.patches["skipped_nodata"] == 0
    assert rep.patches["predicted"] >= one.patches["predicted"] and 0 < rep.network_busy <= 1
    assert rep.processing_grid == one.processing_grid and rep.grid == one.grid
    assert not os.path.exists(work_folder(rep.out))  # the work folder is removed after assembly
    assert sorted(os.listdir(tmp_path)) == ["one.tif", "parts.tif"]


def test_parts_with_polygons_equal_one_stream(tmp_path, scene, tiny_model):
    from tests.reference import assert_same_polygons

    run_scene(scene, tmp_path / "one.tif", vector=tmp_path / "one.gpkg", model=tiny_model, output="probability",
              strip_rows=64)
    rep = distributed.run(scene, tmp_path / "p.tif", vector=tmp_path / "p.gpkg", model=tiny_model,
                          output="probability", strip_rows=64, parts=3)
    assert_same_raster(tmp_path / "one.tif", tmp_path / "p.tif")
    split = rep.seconds["assembly_vector"], rep.seconds["assembly_raster"]  # the assembly's two products
    assert min(split) > 0 and sum(split) <= rep.seconds["assembly"]
    import pyogrio
    import shapely

    def by_class(path):
        _, _, geoms, (names,) = pyogrio.raw.read(path, columns=["class"])
        geoms = shapely.from_wkb(geoms)
        return {c: [g for g, n in zip(geoms, names) if n == c] for c in sorted(set(names))}

    assert_same_polygons(by_class(tmp_path / "one.gpkg"), by_class(tmp_path / "p.gpkg"))


def test_space_needed_projects_the_parts_done_onto_the_rest_and_the_outputs():
    from tiler.distributed._runner import space_needed

    # 100 of 400 rows took 1500 bytes: 4500 more for the other parts, and the outputs hold what all 6000 hold
    assert space_needed([{"rows": [0, 100], "sizes": {"a": 1000, "b": 500}}], 400) == (10500, 1500)
    assert space_needed([], 400) == (0, 0)


def test_a_disk_too_small_for_the_rest_of_the_parts_is_said_once_while_the_run_goes_on(tmp_path, scene, tiny_model,
                                                                                        caplog, monkeypatch):
    real = shutil.disk_usage
    free = {"bytes": 10 ** 12}

    def usage(path):
        u = real(path)
        return u._replace(free=free["bytes"]) if str(path).endswith(".tiler-parts") else u

    monkeypatch.setattr(shutil, "disk_usage", usage)
    kwargs = dict(model=tiny_model, output="probability", strip_rows=64, parts=3)
    with caplog.at_level("WARNING", logger="tiler.distributed"):
        distributed.run(scene, tmp_path / "roomy.tif", **kwargs)
    assert "free" not in caplog.text
    free["bytes"] = 1000
    with caplog.at_level("WARNING", logger="tiler.distributed"):
        rep = distributed.run(scene, tmp_path / "tight.tif", **kwargs)
    said = [r.getMessage() for r in caplog.records if "work folder" in r.getMessage()]
    assert len(said) == 1, said
    assert "has 0 MB free; the 2 remaining part(s)" in said[0] and "measured on the 1 part(s) done" in said[0]
    assert_same_raster(tmp_path / "roomy.tif", rep.out)  # a warning, not a stop: the disk was not full


def test_one_scene_in_four_parts_on_two_workers_is_bit_identical(tmp_path, scene, tiny_model, client):
    one = run_scene(scene, tmp_path / "one.tif", model=tiny_model, output="probability", strip_rows=64)
    rep = distributed.run(scene, tmp_path / "dist.tif", model=tiny_model, output="probability", strip_rows=64,
                          parts=4, client=client)
    assert rep.parts["total"] == 4 and rep.parts["computed"] == 4
    assert len(rep.parts["workers"]) == 2  # both workers took parts
    assert_same_raster(one.out, rep.out)


def test_a_worker_killed_mid_part_has_its_part_rerun(tmp_path, tiny_model, client):
    path = write_tif(tmp_path / "big.tif", smooth_image(3, 1600, 400, seed=7))
    one = run_scene(path, tmp_path / "one.tif", model=tiny_model, output="probability", strip_rows=64)
    out = tmp_path / "dist.tif"
    work = work_folder(out)
    result: dict = {}

    def go():
        try:
            result["report"] = distributed.run(path, out, model=tiny_model, output="probability", strip_rows=64,
                                               parts=4, client=client)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            result["error"] = exc

    t = threading.Thread(target=go)
    t.start()
    killed = None
    deadline = time.time() + 120
    while killed is None and time.time() < deadline and t.is_alive():
        names = os.listdir(work) if os.path.isdir(work) else []
        temps = [n for n in names if n.startswith(".part-") and ".tiler-" in n]
        if temps:  # a part being written: its temporary name carries the worker's pid
            killed = int(temps[0].split(".tiler-")[1].split("-")[0])
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.01)
    t.join(300)
    assert killed is not None, "no part was seen in flight"
    assert "error" not in result, result.get("error")
    assert_same_raster(one.out, result["report"].out)
    client.wait_for_workers(2, timeout=60)


@needs_shared(DUBAI)
def test_batch_of_real_scenes_on_two_workers_equals_tiler_run(tmp_path, client):
    from tests.reference import RGB, build_tiny_unet, uint8_domain

    model = build_tiny_unet(tmp_path / "rgb.keras", domain=uint8_domain(RGB), patch_size=64, depth=2)
    scenes = sorted(str(p) for p in (DUBAI / "tile_1" / "images").glob("*.jpg"))[:6]
    rep = distributed.batch(scenes, tmp_path / "out", model=model, client=client, strip_rows=128)
    assert rep.counts == {"done": 6, "skipped": 0, "failed": 0}
    assert {w for s in rep.scenes for w in s["workers"]} and all(s["pixels"] > 0 for s in rep.scenes)
    for s in scenes:
        stem = Path(s).stem
        one = run_scene(s, tmp_path / f"{stem}.one.tif", model=model, strip_rows=128)
        assert_same_raster(one.out, tmp_path / "out" / f"{stem}.tif")
    # the same batch again: every scene skipped (fingerprint in the output's tags)
    again = distributed.batch(scenes, tmp_path / "out", model=model, client=client, strip_rows=128)
    assert again.counts == {"done": 0, "skipped": 6, "failed": 0}


# ------------------------------------------------------------------ batches from the command line

def _cli(args, **kwargs):
    return subprocess.run([sys.executable, "-m", "tiler.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=PROJECT, **kwargs)


def test_corrupt_scene_fails_alone_with_exit_3(tmp_path, tiny_model, runner):
    from tiler.cli import main

    good = [write_tif(tmp_path / f"s{i}.tif", smooth_image(3, 96, 80, seed=i)) for i in range(3)]
    bad = tmp_path / "s9.tif"
    bad.write_bytes(Path(good[0]).read_bytes()[:400])  # a truncated GeoTIFF
    res = runner.invoke(main, ["batch", str(tmp_path / "s*.tif"), "--out-dir", str(tmp_path / "out"),
                               "--model", tiny_model, "--report", str(tmp_path / "b.json"), "-q"])
    assert res.exit_code == 3, res.output
    assert "s9.tif" in res.output
    doc = json.loads((tmp_path / "b.json").read_text())
    status = {Path(s["scene"]).name: s for s in doc["scenes"]}
    assert [status[f"s{i}.tif"]["status"] for i in range(3)] == ["done"] * 3
    assert status["s9.tif"]["status"] == "failed" and "s9.tif" in status["s9.tif"]["error"]
    assert sorted(os.listdir(tmp_path / "out")) == ["s0.tif", "s1.tif", "s2.tif"]


def test_on_error_fail_still_writes_the_report(tmp_path, tiny_model, runner):
    """Issue 21.11: `batch --on-error fail --report R` wrote no report."""
    from tiler.cli import main

    good = [write_tif(tmp_path / f"s{i}.tif", smooth_image(3, 96, 80, seed=i)) for i in (1, 3)]
    bad = tmp_path / "s2.tif"
    bad.write_bytes(Path(good[0]).read_bytes()[:400])  # a truncated GeoTIFF, second in order
    res = runner.invoke(main, ["batch", good[0], str(bad), good[1], "--out-dir", str(tmp_path / "out"),
                               "--model", tiny_model, "--on-error", "fail", "--report", str(tmp_path / "b.json"),
                               "-q"])
    assert res.exit_code == 1, res.output
    doc = json.loads((tmp_path / "b.json").read_text())
    status = [s["status"] for s in doc["scenes"]]
    assert status == ["done", "failed", "not started"], doc["scenes"]
    assert doc["counts"] == {"done": 1, "skipped": 0, "failed": 1, "not started": 1}


def test_bad_cluster_options_are_exit_2_and_leave_no_out_dir(tmp_path, tiny_model, runner):
    """Issue 21.9/21.12: --scheduler 'not a url' was a ValueError (exit 1); an unreachable one left --out-dir."""
    from tiler.cli import main

    a = write_tif(tmp_path / "x.tif", smooth_image(3, 64, 64))
    for address in ("not a url", "tcp://127.0.0.1:9"):
        out = tmp_path / "out"
        res = runner.invoke(main, ["batch", a, "--out-dir", str(out), "--model", tiny_model, "--scheduler", address])
        assert res.exit_code == 2, res.output
        assert "--scheduler" in res.output and "Traceback" not in res.output
        assert not out.exists()
    res = runner.invoke(main, ["run", a, "-o", str(tmp_path / "m.tif"), "--model", tiny_model, "--scheduler",
                               "not a url"])
    assert res.exit_code == 2 and "--scheduler" in res.output, res.output


def test_workers_beyond_the_cores_are_capped_and_get_enough_memory(caplog):
    """Issue 21.8: --workers 64 on 2 cores failed after 70 s for lack of memory (total / 64 each)."""
    import psutil

    from tiler.distributed._api import MIN_WORKER_MEMORY, _worker_budget

    cores = os.cpu_count()
    with caplog.at_level("WARNING", logger="tiler"):
        workers, memory = _worker_budget(cores * 32)
    assert workers == cores and "more than this machine's" in caplog.text
    total = psutil.virtual_memory().total
    assert memory == min(total, max(total // cores, MIN_WORKER_MEMORY))
    assert _worker_budget(1) == (1, total)


def test_batch_refuses_bad_plans_before_any_work(tmp_path, tiny_model, runner):
    from tiler.cli import main

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write_tif(tmp_path / "a" / "x.tif", smooth_image(3, 64, 64))
    b = write_tif(tmp_path / "b" / "x.tif", smooth_image(3, 64, 64, seed=1))
    out = tmp_path / "out"
    res = runner.invoke(main, ["batch", a, b, "--out-dir", str(out), "--model", tiny_model])
    assert res.exit_code == 2 and "would both write" in res.output
    res = runner.invoke(main, ["batch", a, "--out-dir", str(tmp_path / "a"), "--name", "{stem}.tif",
                               "--model", tiny_model, "--overwrite"])
    assert res.exit_code == 2 and "would overwrite input" in res.output
    res = runner.invoke(main, ["batch", a, "--out-dir", str(out), "--name", "{date}.tif", "--model", tiny_model])
    assert res.exit_code == 2 and "{stem}" in res.output
    out.mkdir(exist_ok=True)
    (out / "x.tif").write_bytes(b"someone else's file")
    res = runner.invoke(main, ["batch", a, "--out-dir", str(out), "--model", tiny_model])
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert (out / "x.tif").read_bytes() == b"someone else's file"


def test_inputs_expand_globs_folders_lists_and_stac(tmp_path):
    import pystac

    for i in range(3):
        write_tif(tmp_path / f"r{i}.tif", smooth_image(3, 16, 16, seed=i))
    (tmp_path / "list.txt").write_text("# scenes\nr0.tif\n\nr2.tif\n")
    items = []
    for i in range(2):
        item = pystac.Item(f"item{i}", None, None, __import__("datetime").datetime(2020, 1, 1), {})
        item.add_asset("red", pystac.Asset(str(tmp_path / f"r{i}.tif"), media_type=pystac.MediaType.GEOTIFF,
                                           roles=["data"]))
        items.append(item)
    pystac.ItemCollection(items).save_object(dest_href=str(tmp_path / "coll.json"))
    got = distributed.expand_inputs([str(tmp_path / "list.txt"), str(tmp_path / "r*.tif"),
                                     str(tmp_path / "coll.json")])
    names = [p.replace(str(tmp_path) + os.sep, "") for p in got]
    assert names == ["r0.tif", "r2.tif", "r1.tif", "coll.json#item0", "coll.json#item1"]
    folder = distributed.expand_inputs([str(tmp_path)])
    assert [p.replace(str(tmp_path) + os.sep, "") for p in folder] == [
        "coll.json#item0", "coll.json#item1", "r0.tif", "r1.tif", "r2.tif"]
    assert distributed.output_name("{stem}_{model}.tif", str(tmp_path / "coll.json") + "#item1",
                                   "/m/tiny.keras") == "item1_tiny.tif"


@needs_shared(SENTINEL2)
def test_stac_item_collection_runs_like_the_folder(tmp_path, runner):
    import pystac

    from tests.reference import build_tiny_unet
    from tiler.cli import main

    model = build_tiny_unet(tmp_path / "s2.keras", channels=("red", "green", "blue", "nir"), domain=None)
    # Two small real Sentinel-2 scenes: windows of the 10 m and 20 m band files, as a folder each and as Items.
    items = []
    for k, (row, col) in enumerate([(200, 300), (900, 1100)]):
        folder = tmp_path / f"s2_{k}"
        folder.mkdir()
        item = pystac.Item(f"s2_{k}", None, None, __import__("datetime").datetime(2016, 1, 12), {})
        for band, common, res in [("B02", "blue", 10), ("B03", "green", 10), ("B04", "red", 10),
                                  ("B08", "nir", 10), ("B11", "swir16", 20)]:
            with rasterio.open(SENTINEL2 / f"s2_{band}.jp2") as src:
                window = rasterio.windows.Window(col * 10 // res, row * 10 // res, 96 * 10 // res, 96 * 10 // res)
                data = src.read(window=window)
                path = write_tif(folder / f"s2_{band}.tif", data, crs=src.crs,
                                 transform=src.transform @ Affine.translation(window.col_off, window.row_off))
            asset = pystac.Asset(path, media_type=pystac.MediaType.GEOTIFF, roles=["data"],
                                 extra_fields={"eo:bands": [{"name": band, "common_name": common}],
                                               "raster:bands": [{"scale": 0.0001, "offset": 0.0, "nodata": 0}]})
            item.add_asset(band, asset)
        items.append(item)
    pystac.ItemCollection(items).save_object(dest_href=str(tmp_path / "items.json"))
    base = ["--model", model, "--registration", "off", "--force", "-q"]
    res = runner.invoke(main, ["batch", str(tmp_path / "s2_*"), "--out-dir", str(tmp_path / "folders"), *base])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["batch", str(tmp_path / "items.json"), "--out-dir", str(tmp_path / "stac"), *base])
    assert res.exit_code == 0, res.output
    for k in range(2):
        assert_same_raster(tmp_path / "folders" / f"s2_{k}.tif", tmp_path / "stac" / f"s2_{k}.tif")


# ------------------------------------------------------------------ resume after SIGKILL

def _journal_parts(path) -> list[int]:
    return sorted(e["part"] for e in Journal(work_folder(path)).read() if e.get("kind") == "part")


def _kill_after(cmd, ready, timeout=240):
    """Start ``cmd`` in its own process group and SIGKILL the whole group once ``ready()`` is true."""
    proc = subprocess.Popen([sys.executable, "-m", "tiler.cli", *map(str, cmd)], cwd=PROJECT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)
    alive = proc.poll() is None
    if alive:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return alive


def test_a_run_killed_after_some_parts_resumes_with_only_the_missing_ones(tmp_path, tiny_model):
    path = write_tif(tmp_path / "scene.tif", smooth_image(3, 1400, 300, seed=3))
    out = tmp_path / "mask.tif"
    args = ["run", path, "--out", out, "--model", tiny_model, "--output", "probability", "--strip-rows", "64",
            "--parts", "7"]
    assert _kill_after(args, lambda: len(_journal_parts(out)) >= 2), "the run ended before it could be killed"
    assert not out.exists()  # nothing under the final name
    done = _journal_parts(out)
    assert 2 <= len(done) < 7
    res = _cli([*args, "--report", tmp_path / "run.json"])
    assert res.returncode == 0, res.stderr
    rep = json.loads((tmp_path / "run.json").read_text())
    assert rep["parts"]["reused"] == len(done) and rep["parts"]["computed"] == 7 - len(done)
    one = run_scene(path, tmp_path / "one.tif", model=tiny_model, output="probability", strip_rows=64)
    assert_same_raster(one.out, out)
    assert not os.path.exists(work_folder(out))


def test_sigterm_of_a_run_in_parts_says_where_the_resumable_parts_are(tmp_path, tiny_model):
    """Issue 21.12: SIGTERM said "no output was left behind" while it kept the journalled parts."""
    path = write_tif(tmp_path / "scene.tif", smooth_image(3, 1400, 300, seed=3))
    out = tmp_path / "mask.tif"
    proc = subprocess.Popen([sys.executable, "-m", "tiler.cli", "run", str(path), "--out", str(out), "--model",
                             tiny_model, "--output", "probability", "--strip-rows", "64", "--parts", "7"],
                            cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and len(_journal_parts(out)) < 2:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be terminated"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    last = err.strip().splitlines()[-1]
    folder = work_folder(out)
    assert last.startswith("Terminated (SIGTERM); no output was written;") and folder in last, last
    assert "run the same command again" in last and f"rm -r '{folder}'" in last
    assert not out.exists() and len(_journal_parts(out)) >= 2


def test_a_batch_killed_midway_resumes_skipping_finished_scenes_and_redoing_touched_ones(tmp_path, tiny_model):
    scenes = [write_tif(tmp_path / f"s{i}.tif", smooth_image(3, 300, 200, seed=i)) for i in range(5)]
    out = tmp_path / "out"
    args = ["batch", *scenes, "--out-dir", out, "--model", tiny_model, "--strip-rows", "64"]
    finished = lambda: out.exists() and len([n for n in os.listdir(out) if n.endswith(".tif")  # noqa: E731
                                             and not n.startswith(".")]) >= 2
    assert _kill_after(args, finished), "the batch ended before it could be killed"
    kept = sorted(n for n in os.listdir(out) if n.endswith(".tif") and not n.startswith("."))
    assert 2 <= len(kept) < 5
    res = _cli([*args, "--report", tmp_path / "b1.json"])
    assert res.returncode == 0, res.stderr
    status = {Path(s["scene"]).name: s["status"] for s in json.loads((tmp_path / "b1.json").read_text())["scenes"]}
    assert {n for n, s in status.items() if s == "skipped"} == set(kept)
    assert {n for n, s in status.items() if s == "done"} == {Path(s).name for s in scenes} - set(kept)
    for s in scenes:
        one = run_scene(s, tmp_path / f"{Path(s).stem}.one.tif", model=tiny_model, strip_rows=64)
        assert_same_raster(one.out, out / Path(s).name)
    # a touched input is reprocessed (its output is another run's now: --overwrite), the others skipped
    os.utime(scenes[1], ns=(time.time_ns(), time.time_ns()))
    res = _cli([*args, "--report", tmp_path / "b2.json"])
    assert res.returncode == 2 and "--overwrite" in res.stderr
    res = _cli([*args, "--overwrite", "--report", tmp_path / "b2.json"])
    assert res.returncode == 0, res.stderr
    status = {Path(s["scene"]).name: s["status"] for s in json.loads((tmp_path / "b2.json").read_text())["scenes"]}
    assert status == {"s0.tif": "skipped", "s1.tif": "done", "s2.tif": "skipped", "s3.tif": "skipped",
                      "s4.tif": "skipped"}


def test_journal_is_discarded_when_the_fingerprint_changes_and_survives_a_torn_line(tmp_path):
    j = Journal(str(tmp_path / ".m.tif.tiler-parts"))
    fp = {"scene": [{"path": "/s.tif", "size": 1, "mtime_ns": 2}], "model_sha256": "ab", "options": {}, "version": "1"}
    assert j.start(fp, [(0, 10), (10, 20)]) == {}
    (tmp_path / ".m.tif.tiler-parts" / "part-00000.tif").write_bytes(b"x" * 5)
    j.append({"part": 0, "rows": [0, 10], "sizes": {"part-00000.tif": 5}})
    with open(j.path, "a") as fh:
        fh.write('{"kind": "part", "part": 1, "ro')  # torn by a crash
    assert list(j.start(fp, [(0, 10), (10, 20)])) == [0]
    j.append({"part": 1, "rows": [10, 20], "sizes": {"part-00000.tif": 5}})
    assert sorted(j.start(fp, [(0, 10), (10, 20)])) == [0, 1]
    touched = {**fp, "scene": [{"path": "/s.tif", "size": 1, "mtime_ns": 3}]}
    assert j.start(touched, [(0, 10), (10, 20)]) == {}
    assert os.listdir(j.folder) == ["journal.jsonl"]
    shutil.rmtree(j.folder)


@pytest.mark.parametrize("options", [{}, {"simplify": 1.5}, {"connectivity": 8}])
def test_polygons_of_parts_are_the_same_features_and_parts_keep_no_probabilities(tmp_path, scene, tiny_model,
                                                                                  monkeypatch, options):
    """Parts write their finished polygons and the pieces their seams cut, never probability files; the
    assembled features equal one stream's: the same geometries (topologically), classes, pixel counts, mean
    probabilities, areas and perimeters, in any order."""
    import pyogrio
    import shapely

    from tiler.distributed import _tasks

    seen = []
    real = _tasks._assemble_polygons

    def spy(job, parts, dest, config, context):
        seen.extend(sorted(os.listdir(job.work)))
        return real(job, parts, dest, config, context)

    monkeypatch.setattr(_tasks, "_assemble_polygons", spy)
    run_scene(scene, vector=tmp_path / "one.gpkg", model=tiny_model, strip_rows=64, **options)
    distributed.run(scene, vector=tmp_path / "p.gpkg", model=tiny_model, strip_rows=64, parts=3, **options)
    assert seen and not any(n.endswith(".tif") for n in seen), seen  # no raster at all: --vector alone

    def features(path):
        _, _, geoms, fields = pyogrio.raw.read(path)
        rows = sorted(zip(fields[0], fields[4].tolist(), fields[5].tolist(), fields[2].tolist(),
                          fields[3].tolist(), shapely.normalize(shapely.from_wkb(geoms))),
                      key=lambda r: (r[0], r[5].bounds, r[1]))
        return rows

    one, parts = features(tmp_path / "one.gpkg"), features(tmp_path / "p.gpkg")
    assert len(one) == len(parts) > 1000
    for a, b in zip(one, parts):
        assert a[:3] == b[:3]  # class, pixels, mean probability: exactly
        assert a[3] == pytest.approx(b[3], rel=1e-12) and a[4] == pytest.approx(b[4], rel=1e-12)
        assert shapely.equals(a[5], b[5])
