"""Scenes and results in object storage, against real servers on local ports (tests/servers.py).

The oracle of every read is the same command on the local copy of the file: a scene read over HTTP
range requests or the S3 API gives the same output bytes (DESIGN.md invariant 12), and an output
uploaded to S3 is, downloaded again, the same bytes as the local one. Every command runs as a child
process, as a user runs it (GDAL's caches start empty, the environment is the user's).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import DUBAI, SHARED, needs_shared
from tests.servers import HttpServer, S3Server, aerial_cog

LANDSAT8 = SHARED / "landsat8_LC80200392015216"
TILER = str(Path(sys.executable).with_name("tiler"))

pytestmark = [needs_shared(DUBAI)]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """An HTTP server with range requests and an S3 server, both serving the same COG scene."""
    root = tmp_path_factory.mktemp("stores")
    www = root / "www"
    www.mkdir()
    scene = aerial_cog(www / "aerial.tif", 1024)
    http = HttpServer(www).start()
    s3 = S3Server(root / "s3").start()
    try:
        yield {"root": root, "scene": scene, "http": http, "s3": s3}
    finally:
        http.stop()
        s3.stop()


@pytest.fixture
def bucket(stores):
    """A fresh bucket holding the scene as ``scenes/aerial.tif``."""
    name = f"b-{uuid.uuid4().hex[:10]}"
    client = stores["s3"].client()
    client.create_bucket(Bucket=name)
    client.upload_file(stores["scene"], name, "scenes/aerial.tif")
    return name


def tiler(stores, *args, work=None, env=None, check=None):
    """``tiler ARGS`` in a child process with the store's variables; returns the CompletedProcess."""
    full = dict(os.environ, **stores["s3"].environment(), GDAL_HTTP_MAX_RETRY="1", GDAL_HTTP_RETRY_DELAY="0.1",
                TILER_WORK_DIR=str(work or stores["root"] / "work"), TF_CPP_MIN_LOG_LEVEL="3")
    full.update(env or {})
    out = subprocess.run([TILER, *map(str, args)], capture_output=True, text=True, env=full,
                         timeout=600)
    if check is not None:
        assert out.returncode == check, out.stderr[-3000:]
    return out


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def get(stores, bucket, key) -> bytes:
    return stores["s3"].client().get_object(Bucket=bucket, Key=key)["Body"].read()


def keys(stores, bucket) -> set:
    return {o["Key"] for o in stores["s3"].client().list_objects_v2(Bucket=bucket).get("Contents", [])}


def test_same_bytes_from_disk_http_and_s3_and_written_to_s3(stores, bucket, tmp_path):
    """The scene read from the local disk, over HTTP and from S3: byte-identical masks (a one-part run
    records no fingerprint of its inputs); the outputs
    uploaded to S3 are the local run's bytes, the report names URLs and no credentials."""
    local = tmp_path / "local.tif"
    tiler(stores, "run", stores["scene"], "-o", local, "--vector", tmp_path / "local.gpkg", "-q", check=0)
    tiler(stores, "run", stores["http"].url("aerial.tif"), "-o", tmp_path / "http.tif", "-q", check=0)
    out = f"s3://{bucket}/out/mask.tif"
    tiler(stores, "run", f"s3://{bucket}/scenes/aerial.tif", "-o", out, "--vector", f"s3://{bucket}/out/p.gpkg",
          "--report", f"s3://{bucket}/out/run.json", "-q", check=0)
    reference = local.read_bytes()
    assert (tmp_path / "http.tif").read_bytes() == reference
    assert get(stores, bucket, "out/mask.tif") == reference
    assert keys(stores, bucket) == {"scenes/aerial.tif", "out/mask.tif", "out/p.gpkg", "out/run.json"}
    report = json.loads(get(stores, bucket, "out/run.json"))
    assert report["out"] == out and report["scene"]["path"] == f"s3://{bucket}/scenes/aerial.tif"
    assert report["vector"]["path"] == f"s3://{bucket}/out/p.gpkg"
    assert "tiler-test-secret" not in json.dumps(report)
    # polygons: the same features as the local run's (GeoPackage bytes carry a timestamp)
    import pyogrio

    remote_gpkg = tmp_path / "remote.gpkg"
    remote_gpkg.write_bytes(get(stores, bucket, "out/p.gpkg"))
    a = pyogrio.read_arrow(tmp_path / "local.gpkg")[1]
    b = pyogrio.read_arrow(remote_gpkg)[1]
    assert a.num_rows == b.num_rows > 0 and a.equals(b)
    # nothing of the run is left in the work folder
    assert not any(p.is_file() for p in (stores["root"] / "work").rglob("*"))


def test_multipart_upload_verified_against_the_stores_etag(stores, bucket, tmp_path, monkeypatch):
    """A file over the part size goes up in parts; the store's own ETag (MD5 of the parts' MD5s) is
    the oracle the upload is checked against; a changed file under the same key is refused."""
    from tiler import storage
    from tiler.errors import OutputExistsError
    from tiler.storage import _store

    for k, v in stores["s3"].environment().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(_store, "PART_BYTES", 5 << 20)  # S3's smallest part
    data = os.urandom(12 << 20)
    path = tmp_path / "big.tif"
    path.write_bytes(data)
    url = f"s3://{bucket}/big/file.tif"
    info = storage.upload(str(path), url, overwrite=False)
    assert info["etag"].endswith("-3") and info["bytes"] == len(data)
    assert sha(get(stores, bucket, "big/file.tif")) == sha(data)
    with pytest.raises(OutputExistsError):
        storage.upload(str(path), url, overwrite=False)
    assert storage.stat(url) == len(data) and storage.stat(f"s3://{bucket}/big/none.tif") is None


def test_batch_over_a_bucket_prefix_skips_what_is_done(stores, bucket, tmp_path):
    """``tiler batch 's3://b/scenes/*.tif' --out-dir s3://b/masks/``: the prefix is listed, every output
    uploaded; run again, all are skipped; with one new object, only that one runs, and a broken one
    fails in the report (exit 3) without an object under its key."""
    client = stores["s3"].client()
    client.upload_file(stores["scene"], bucket, "scenes/sub/second.tif")
    client.put_object(Bucket=bucket, Key="scenes/notes.txt", Body=b"not a scene")
    args = ["batch", f"s3://{bucket}/scenes/*.tif", "--out-dir", f"s3://{bucket}/masks/", "-q"]
    tiler(stores, *args, "--report", tmp_path / "first.json", check=0)
    first = json.loads((tmp_path / "first.json").read_text())
    assert first["counts"] == {"done": 2, "skipped": 0, "failed": 0}
    assert {s["out"] for s in first["scenes"]} == {f"s3://{bucket}/masks/aerial.tif", f"s3://{bucket}/masks/second.tif"}
    tiler(stores, "run", stores["scene"], "-o", tmp_path / "local.tif", "-q", check=0)
    mask = get(stores, bucket, "masks/aerial.tif")
    import rasterio

    with rasterio.MemoryFile(mask) as mf, mf.open() as ds, rasterio.open(tmp_path / "local.tif") as ref:
        assert (ds.read() == ref.read()).all() and ds.profile == ref.profile
    tiler(stores, *args, "--report", tmp_path / "second.json", check=0)
    assert json.loads((tmp_path / "second.json").read_text())["counts"] == {"done": 0, "skipped": 2, "failed": 0}
    client.upload_file(stores["scene"], bucket, "scenes/third.tif")
    client.put_object(Bucket=bucket, Key="scenes/broken.tif", Body=b"II*\x00 not a GeoTIFF after all")
    out = tiler(stores, *args, "--report", tmp_path / "third.json", check=3)  # 3: some scenes failed
    third = json.loads((tmp_path / "third.json").read_text())
    assert third["counts"] == {"done": 1, "skipped": 2, "failed": 1}
    assert [s["scene"] for s in third["scenes"] if s["status"] == "done"] == [f"s3://{bucket}/scenes/third.tif"]
    failed = [s for s in third["scenes"] if s["status"] == "failed"]
    assert failed[0]["scene"] == f"s3://{bucket}/scenes/broken.tif" and "broken.tif" in out.stderr
    assert "masks/broken.tif" not in keys(stores, bucket)


@needs_shared(LANDSAT8)
def test_remote_manifest_and_stac_item_with_url_assets(stores, bucket, tmp_path):
    """A manifest on HTTP whose files are in S3, and a STAC Item on HTTP whose asset hrefs are S3 URLs,
    describe the same band groups as their local copies (pan 15 m and multispectral 30 m, Landsat-8)."""
    client = stores["s3"].client()
    www = Path(stores["http"].root)
    for band in ("B2", "B3", "B4", "B8"):
        client.upload_file(str(LANDSAT8 / f"l8_{band}.tif"), bucket, f"l8/l8_{band}.tif")
    manifest = ('reference = "pan"\n[groups.pan]\nfiles = ["{0}l8_B8.tif"]\nbands = ["pan"]\n'
                '[groups.ms]\nfiles = ["{0}l8_B2.tif", "{0}l8_B3.tif", "{0}l8_B4.tif"]\n'
                'bands = ["blue", "green", "red"]\n')
    (www / f"{bucket}.toml").write_text(manifest.format(f"s3://{bucket}/l8/"))
    (tmp_path / "local.toml").write_text(manifest.format(str(LANDSAT8) + "/"))
    remote = json.loads(tiler(stores, "info", "--json", stores["http"].url(f"{bucket}.toml"), check=0).stdout)
    local = json.loads(tiler(stores, "info", "--json", tmp_path / "local.toml", check=0).stdout)
    for key in ("width", "height", "crs", "transform"):
        assert remote[key] == local[key]
    assert [g["name"] for g in remote["groups"]] == [g["name"] for g in local["groups"]] == ["pan", "ms"]
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "l8-rgb",
            "properties": {"datetime": "2015-08-04T00:00:00Z"}, "geometry": None, "links": [],
            "assets": {b: {"href": f"s3://{bucket}/l8/l8_{b}.tif", "type": "image/tiff; application=geotiff",
                           "roles": ["data"], "eo:bands": [{"name": b, "common_name": n}]}
                       for b, n in (("B2", "blue"), ("B3", "green"), ("B4", "red"))}}
    (www / f"{bucket}-item.json").write_text(json.dumps(item))
    doc = json.loads(tiler(stores, "info", "--json", stores["http"].url(f"{bucket}-item.json"), check=0).stdout)
    assert doc["kind"] == "stac" and [b["name"] for g in doc["groups"] for b in g["bands"]] == ["blue", "green", "red"]


def test_faults_say_what_happened_and_leave_nothing(stores, bucket, tmp_path):
    """A missing object or bucket, an output that exists, an output that is the input, an HTTP output,
    a server that does not answer: each is one line naming the URL and the fix, with its exit code, and
    nothing is written under the output key."""
    src = f"s3://{bucket}/scenes/aerial.tif"
    out = tiler(stores, "run", f"s3://{bucket}/scenes/missing.tif", "-o", tmp_path / "m.tif", check=2)
    assert f"s3://{bucket}/scenes/missing.tif does not exist" in out.stderr
    out = tiler(stores, "run", stores["http"].url("missing.tif"), "-o", tmp_path / "m.tif", check=2)
    assert "missing.tif does not exist" in out.stderr
    out = tiler(stores, "run", src, "-o", "s3://no-such-bucket-x/m.tif", check=2)
    assert "bucket 'no-such-bucket-x' does not exist" in out.stderr
    out = tiler(stores, "run", src, "-o", src, "--overwrite", check=2)
    assert "is an input" in out.stderr
    out = tiler(stores, "run", src, "-o", stores["http"].url("m.tif"), check=2)
    assert "tiler writes outputs to s3://" in out.stderr
    stores["s3"].client().put_object(Bucket=bucket, Key="out/m.tif", Body=b"earlier")
    out = tiler(stores, "run", src, "-o", f"s3://{bucket}/out/m.tif", check=2)
    assert "exists; pass --overwrite" in out.stderr and get(stores, bucket, "out/m.tif") == b"earlier"
    dead = HttpServer(tmp_path / "dead")  # a port nobody answers on
    t = time.monotonic()
    out = tiler(stores, "run", dead.url("x.tif"), "-o", f"s3://{bucket}/out/dead.tif", check=1)
    assert dead.url("x.tif") in out.stderr and "run the same command again" in out.stderr
    assert time.monotonic() - t < 60
    assert keys(stores, bucket) == {"scenes/aerial.tif", "out/m.tif"}
    assert not tmp_path.joinpath("m.tif").exists()


def test_refused_credentials_name_the_variables(stores, bucket, tmp_path):
    """With the store checking signatures and no valid key: exit 2 naming the variables to set, for a
    scene read and for an output; the secret never appears."""
    stores["s3"].enforce_auth(True)
    try:
        out = tiler(stores, "run", f"s3://{bucket}/scenes/aerial.tif", "-o", tmp_path / "m.tif", check=2)
        assert "AWS_ACCESS_KEY_ID" in out.stderr and "access refused" in out.stderr
        out = tiler(stores, "run", stores["scene"], "-o", f"s3://{bucket}/out/m.tif", check=2)
        assert "AWS_ACCESS_KEY_ID" in out.stderr and "tiler-test-secret" not in out.stderr
    finally:
        stores["s3"].enforce_auth(False)
    assert not tmp_path.joinpath("m.tif").exists()


def test_server_stopped_mid_run_then_resumed(stores, bucket, tmp_path):
    """The HTTP server serving the scene stops while a run in parts writes to S3: exit 1 naming the URL,
    no object under the output key, the finished parts kept in the work folder; with the server back, the
    same command reuses them and ends with the local run's bytes. (GDAL's cache of fetched ranges is off
    for the server's URLs, as for a scene larger than the cache: every part reads the server.)"""
    www = tmp_path / "www"
    www.mkdir()
    big = aerial_cog(www / "big.tif", 2048, seed=3)
    http = HttpServer(www).start()
    work = tmp_path / "work"
    out = f"s3://{bucket}/out/big.tif"
    args = ["run", http.url("big.tif"), "-o", out, "--parts", "4", "--report", tmp_path / "run.json", "-q"]
    full = dict(os.environ, **stores["s3"].environment(), GDAL_HTTP_MAX_RETRY="1", GDAL_HTTP_RETRY_DELAY="0.1",
                TILER_WORK_DIR=str(work), TF_CPP_MIN_LOG_LEVEL="3",
                CPL_VSIL_CURL_NON_CACHED=f"/vsicurl/{http.url('')}")
    proc = subprocess.Popen([TILER, *map(str, args)], env=full, stderr=subprocess.PIPE,
                            text=True)
    try:
        t = time.monotonic()
        while time.monotonic() - t < 300:  # the first part journalled: stop the server
            journals = list(work.rglob("journal.jsonl"))
            if journals and len(journals[0].read_text().splitlines()) >= 2:
                break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        http.stop()
        _, err = proc.communicate(timeout=300)
    finally:
        http.stop()
    assert proc.returncode == 1, err
    assert "big.tif" in err and "run the same command again" in err
    assert "out/big.tif" not in keys(stores, bucket)
    http.start()
    try:
        tiler(stores, *args, work=work, check=0)
    finally:
        http.stop()
    report = json.loads((tmp_path / "run.json").read_text())
    assert report["parts"]["reused"] >= 1 and report["out"] == out
    tiler(stores, "run", big, "-o", tmp_path / "local.tif", "--parts", "4", "-q", check=0)
    import rasterio

    # The same pixels, profile and tags as the local run in parts; only the fingerprint tag differs (it
    # names the inputs: a URL and its ETag there, a path and its modification time here).
    with rasterio.MemoryFile(get(stores, bucket, "out/big.tif")) as mf, mf.open() as ds, \
            rasterio.open(tmp_path / "local.tif") as ref:
        assert (ds.read() == ref.read()).all() and ds.profile == ref.profile
        tags, ref_tags = ds.tags(), ref.tags()
        assert tags.pop("TILER_FINGERPRINT") != ref_tags.pop("TILER_FINGERPRINT") and tags == ref_tags
    assert not any(p.is_file() for p in work.rglob("*"))


def test_urls_shown_without_credentials_and_work_paths_stable():
    """A pasted pre-signed URL or user:password is never shown whole; the work file of a URL is stable."""
    from tiler.storage import is_url, redact, work_path

    url = ("https://user:pw@host.example/a/b.tif?X-Amz-Credential=AKIA%2F&X-Amz-Signature=abc123"
           "&X-Amz-Expires=60")
    shown = redact(url)
    assert "pw" not in shown and "abc123" not in shown and "AKIA" not in shown and "X-Amz-Expires=60" in shown
    assert redact("/local/path.tif") == "/local/path.tif"
    assert work_path("s3://b/k/m.tif", "/w") == work_path("s3://b/k/m.tif", "/w") != work_path("s3://b/k2/m.tif", "/w")
    assert work_path("s3://b/k/m.tif", "/w").endswith("/m.tif")
    assert [is_url(p) for p in ("s3://b/k", "https://h/x", "/vsis3/b/k", "gs://b/k", "/tmp/x", "file:///x")] == [
        True, True, True, True, False, False]


def test_stores_need_no_setup_beyond_the_test_extra():
    """moto's server and rangehttpserver come with ``pip install '.[test]'`` (no network at test time)."""
    assert shutil.which("moto_server") or Path(sys.executable).with_name("moto_server").exists()
    import RangeHTTPServer  # noqa: F401


def test_a_failed_upload_takes_back_the_commit(stores, bucket, tmp_path, monkeypatch):
    """Two outputs in one transaction, the second's bucket removed while the command ran: the commit
    fails naming it, the first object (already uploaded) is deleted again, and nothing is left in the
    work folder."""
    from tiler.destination import guard_outputs
    from tiler.errors import TilerError

    for k, v in stores["s3"].environment().items():
        monkeypatch.setenv(k, v)
    client = stores["s3"].client()
    other = f"b-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=other)
    with pytest.raises(TilerError, match=other):
        with guard_outputs({"--out": f"s3://{bucket}/out/a.json", "--report": f"s3://{other}/out/b.json"},
                           work_dir=str(tmp_path / "work")) as guard:
            guard["--out"].write_text("{}")
            guard["--report"].write_text("{}")
            client.delete_bucket(Bucket=other)
    assert keys(stores, bucket) == {"scenes/aerial.tif"}
    assert not any(p.is_file() for p in (tmp_path / "work").rglob("*"))


def test_view_and_vectorize_a_mask_in_a_bucket(stores, bucket, tmp_path):
    """``tiler view`` and ``tiler vectorize`` read a mask (and its scene) from S3 and write to S3, and say
    the URLs they wrote; the polygons are those of the same mask on the local disk."""
    tiler(stores, "run", stores["scene"], "-o", tmp_path / "m.tif", "-q", check=0)
    stores["s3"].client().upload_file(str(tmp_path / "m.tif"), bucket, "out/m.tif")
    mask, scene = f"s3://{bucket}/out/m.tif", f"s3://{bucket}/scenes/aerial.tif"
    out = tiler(stores, "view", mask, "--scene", scene, "-o", f"s3://{bucket}/out/m.html", check=0)
    assert f"wrote s3://{bucket}/out/m.html" in out.stderr
    assert get(stores, bucket, "out/m.html").count(b"data:image/") >= 2  # the scene and the class map
    out = tiler(stores, "vectorize", mask, "-o", f"s3://{bucket}/out/m.fgb", check=0)
    assert f"wrote s3://{bucket}/out/m.fgb" in out.stderr
    tiler(stores, "vectorize", tmp_path / "m.tif", "-o", tmp_path / "m.fgb", "-q", check=0)
    import pyogrio

    (tmp_path / "remote.fgb").write_bytes(get(stores, bucket, "out/m.fgb"))
    assert pyogrio.read_arrow(tmp_path / "remote.fgb")[1].equals(pyogrio.read_arrow(tmp_path / "m.fgb")[1])
