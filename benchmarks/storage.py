"""Scenes in object storage: a COG read over loopback HTTP and S3 against the same file on the local disk.

Issue 35's targets, measured side by side in one run:

1. scene Mpx/s of ``tiler run`` (the bundled model, its defaults) on a COG over HTTP (rangehttpserver)
   and over the S3 API (moto's server), against the same file on the local disk: one run each,
   interleaved, ``--rounds`` times; the median of each (target: HTTP ≥ 0.9× local);
2. the HTTP requests and bytes one run makes (counted by a small proxy in front of the server) against
   the number and the compressed size of the COG's full-resolution internal tiles the run needs (all of
   them: the run reads the whole scene): target ≤ 1.2× both;
3. the same with 50 ms added to every request by that proxy (target: ≥ 0.8× local);
4. the upload of a finished output to the S3 server by three well-kept clients (boto3, which tiler uses;
   obstore; s3fs): seconds for a file of ``--upload-mb`` MB.

Usage::

    python benchmarks/storage.py [--size 4096] [--rounds 2] [--upload-mb 256]

Needs ``../shared/data/dubai_aerial`` (the scene is cut from it, as in ``tests/servers.py``), and
``moto[server]`` and ``rangehttpserver`` (``pip install '.[test]'``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import stamp  # noqa: E402

from tests.servers import DUBAI, HttpServer, S3Server, aerial_cog, free_port  # noqa: E402

TILER = str(Path(sys.executable).with_name("tiler"))


class Proxy:
    """A forwarding HTTP proxy on a free port that delays every request and counts requests and bytes."""

    def __init__(self, upstream_port: int, delay: float = 0.0) -> None:
        self.delay, self.requests, self.bytes = delay, 0, 0
        lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                time.sleep(proxy.delay)
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                with lock:
                    proxy.requests += 1
                    proxy.bytes += len(body)
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "server", "date"):
                        self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                conn.close()

            do_GET = do_HEAD = _forward

            def log_message(self, *args) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def reset(self) -> None:
        self.requests = self.bytes = 0

    def close(self) -> None:
        self.server.shutdown()


def run(scene: str, out: Path, env: dict) -> dict:
    """``tiler run SCENE -o OUT --report`` in a fresh process; the report's seconds and Mpx/s."""
    report = out.with_suffix(".json")
    t = time.perf_counter()
    proc = subprocess.run([TILER, "run", scene, "-o", str(out), "--report", str(report), "--overwrite", "-q"],
                          env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"tiler run {scene} failed:\n{proc.stderr[-2000:]}")
    doc = json.loads(report.read_text())
    return {"mpx_s": doc["megapixels_per_second"], "seconds": doc["seconds"]["total"],
            "process_s": time.perf_counter() - t, "bytes": out.read_bytes()}


def tiles_needed(path: str) -> tuple[int, int]:
    """The number and total compressed bytes of the full-resolution internal tiles of a COG."""
    import rasterio

    with rasterio.open(path) as ds:
        blocks = [ds.block_size(1, ji[0], ji[1]) for ji, _ in ds.block_windows(1)]
    return len(blocks), sum(blocks)


def upload_clients(s3: S3Server, path: Path) -> list[tuple[str, float]]:
    """Seconds to upload ``path`` to the S3 server with boto3 (tiler's), obstore and s3fs."""
    client = s3.client()
    client.create_bucket(Bucket="uploads")
    env = s3.environment()
    rows = []
    from tiler.storage import upload

    os.environ.update(env)
    t = time.perf_counter()
    upload(str(path), "s3://uploads/boto3.tif", overwrite=True)  # one PUT or parts, then the check
    rows.append(("boto3 (tiler.storage.upload: parts of 64 MiB, size and ETag checked)", time.perf_counter() - t))
    try:
        import obstore
        from obstore.store import S3Store

        store = S3Store("uploads", endpoint=s3.endpoint, access_key_id=env["AWS_ACCESS_KEY_ID"],
                        secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region="us-east-1",
                        client_options={"allow_http": True})
        t = time.perf_counter()
        obstore.put(store, "obstore.tif", path, chunk_size=64 << 20)
        rows.append(("obstore.put (multipart)", time.perf_counter() - t))
    except ImportError:
        rows.append(("obstore (not installed)", float("nan")))
    try:
        import s3fs

        fs = s3fs.S3FileSystem(key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"],
                               client_kwargs={"endpoint_url": s3.endpoint, "region_name": "us-east-1"})
        t = time.perf_counter()
        fs.put_file(str(path), "uploads/s3fs.tif")
        rows.append(("s3fs.put_file", time.perf_counter() - t))
    except ImportError:
        rows.append(("s3fs (not installed)", float("nan")))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=4096, help="scene side in pixels")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--upload-mb", type=int, default=256)
    args = ap.parse_args()
    if not DUBAI.exists():
        raise SystemExit(f"needs the shared data: {DUBAI} is absent")
    print(stamp())
    with tempfile.TemporaryDirectory(prefix="tiler-storage-bench-") as tmp:
        tmp = Path(tmp)
        www = tmp / "www"
        www.mkdir()
        scene = aerial_cog(www / "scene.tif", args.size, seed=7)
        http = HttpServer(www).start()
        s3 = S3Server(tmp / "s3").start()
        s3.client().create_bucket(Bucket="scenes")
        s3.client().upload_file(scene, "scenes", "scene.tif")
        counting, slow = Proxy(http.port), Proxy(http.port, delay=0.05)
        env = dict(os.environ, **s3.environment(), TILER_WORK_DIR=str(tmp / "work"), TF_CPP_MIN_LOG_LEVEL="3")
        sources = {"local disk": scene, "HTTP (loopback)": counting.url("scene.tif"),
                   "S3 API (moto, loopback)": "s3://scenes/scene.tif",
                   "HTTP + 50 ms per request": slow.url("scene.tif")}
        run(scene, tmp / "warm.tif", env)  # the model's converted network cached, the OS's file cache warm
        results: dict = {k: [] for k in sources}
        traffic: dict = {}
        for _ in range(args.rounds):
            for name, src in sources.items():
                counting.reset()
                slow.reset()
                results[name].append(run(src, tmp / "out.tif", env))
                if name.startswith("HTTP"):
                    proxy = counting if name == "HTTP (loopback)" else slow
                    traffic[name] = (proxy.requests, proxy.bytes)
        http.stop()
        counting.close()
        slow.close()
        reference = results["local disk"][0]["bytes"]
        local = statistics.median(r["mpx_s"] for r in results["local disk"])
        print(f"\nScene: {args.size}x{args.size} RGB COG (DEFLATE, 256-px tiles, "
              f"{os.path.getsize(scene) / 1e6:.1f} MB), the bundled model at its defaults; {args.rounds} "
              "interleaved rounds, medians")
        print("\n| source | scene Mpx/s | × local | run s | process s | output = local bytes |")
        print("|---|---|---|---|---|---|")
        for name, rows in results.items():
            mpx = statistics.median(r["mpx_s"] for r in rows)
            print(f"| {name} | {mpx:.2f} | {mpx / local:.2f} | {statistics.median(r['seconds'] for r in rows):.1f} | "
                  f"{statistics.median(r['process_s'] for r in rows):.1f} | "
                  f"{all(r['bytes'] == reference for r in rows)} |")
        n_tiles, tile_bytes = tiles_needed(scene)
        print(f"\nRequests and bytes of one run against the {n_tiles} full-resolution internal tiles "
              f"({tile_bytes / 1e6:.2f} MB) the run needs:")
        print("\n| source | HTTP requests | × tiles | bytes transferred | × tile bytes |")
        print("|---|---|---|---|---|")
        for name, (req, nbytes) in traffic.items():
            print(f"| {name} | {req} | {req / n_tiles:.2f} | {nbytes / 1e6:.2f} MB | {nbytes / tile_bytes:.2f} |")
        big = tmp / "upload.bin"
        with open(big, "wb") as f:
            for _ in range(args.upload_mb):
                f.write(os.urandom(1 << 20))
        print(f"\nUpload of a {args.upload_mb} MB file to the S3 server (loopback):")
        print("\n| client | seconds |")
        print("|---|---|")
        for name, seconds in upload_clients(s3, big):
            print(f"| {name} | {seconds:.2f} |")
        s3.stop()


if __name__ == "__main__":
    main()
