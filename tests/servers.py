"""Real servers on free local ports for the object-storage tests and ``benchmarks/storage.py``.

* :class:`HttpServer`: ``rangehttpserver`` (Python's HTTP server with ``Range`` requests, as object
  stores and CDNs answer them), serving a folder; its request log is kept, one line per request.
* :class:`S3Server`: moto's server mode (``moto_server``), which speaks the S3 API over HTTP; the
  environment variables boto3 and GDAL read point at it (:meth:`S3Server.environment`).

Both run as child processes, so that a test can stop one mid-run and start it again on the same port.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.shutil import copy as rio_copy

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DUBAI = SHARED / "dubai_aerial"

#: One line of Python's HTTP server log: ``127.0.0.1 - - [date] "GET /x.tif HTTP/1.1" 206 -``.
_LOG_RE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3})')


def free_port() -> int:
    """A TCP port nobody listens on now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, timeout: float = 30.0) -> None:
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


class _Child:
    """A server process on a fixed port, restartable."""

    def __init__(self, port: int, log: Path) -> None:
        self.port, self.log, self.proc = port, log, None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> "_Child":
        if self.proc is not None:
            return self
        fh = open(self.log, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=fh, stderr=subprocess.STDOUT, cwd=self.cwd(),
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        fh.close()
        _wait(f"http://127.0.0.1:{self.port}/")
        return self

    def cwd(self) -> Optional[str]:
        return None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


class HttpServer(_Child):
    """``python -m RangeHTTPServer`` serving ``root`` on ``127.0.0.1:port``."""

    def __init__(self, root: Path, port: Optional[int] = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        super().__init__(port or free_port(), root.parent / f"http-{root.name}.log")
        self.root = root

    def command(self) -> list[str]:
        return [sys.executable, "-m", "RangeHTTPServer", "--bind", "127.0.0.1", str(self.port)]

    def cwd(self) -> str:
        return str(self.root)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def requests(self) -> list[dict]:
        """Every request logged so far: method, path, status."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [m.groupdict() for m in _LOG_RE.finditer(text)]


class S3Server(_Child):
    """``moto_server`` on ``127.0.0.1:port``: an S3 API over HTTP, buckets in memory."""

    def __init__(self, folder: Path, port: Optional[int] = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        super().__init__(port or free_port(), folder / "moto.log")

    def command(self) -> list[str]:
        exe = shutil.which("moto_server") or os.path.join(os.path.dirname(sys.executable), "moto_server")
        return [exe, "-H", "127.0.0.1", "-p", str(self.port)]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict:
        """The variables a user sets for an S3-compatible store (boto3's and the AWS CLI's names;
        tiler derives GDAL's from them)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "tiler-test",
                "AWS_SECRET_ACCESS_KEY": "tiler-test-secret", "AWS_DEFAULT_REGION": "us-east-1"}

    def client(self):
        import boto3

        env = self.environment()
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")

    def enforce_auth(self, on: bool) -> None:
        """Make moto check request signatures against its IAM users (none: every request is refused
        with 403) or stop checking (moto's ``/moto-api/reset-auth``)."""
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=b"0" if on else b"inf",
                                     method="POST", headers={"Content-Type": "application/octet-stream"})
        urllib.request.urlopen(req, timeout=10).close()


def aerial_cog(path: Path, size: int = 1024, *, seed: int = 0) -> str:
    """A georeferenced RGB COG (DEFLATE, 256-px internal tiles, UTM 40N at 0.5 m) cut from the shared Dubai
    images: ``size`` x ``size`` px of 512-px blocks, each a flipped or rotated crop of a random image."""
    images = sorted(glob.glob(str(DUBAI / "tile_*" / "images" / "*.jpg")))
    rng = np.random.default_rng(seed)
    data = np.zeros((3, size, size), np.uint8)
    for r in range(0, size, 512):
        for c in range(0, size, 512):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)  # plain JPEGs: placed below
                with rasterio.open(images[rng.integers(len(images))]) as ds:
                    block = ds.read(window=((0, min(512, ds.height)), (0, min(512, ds.width))))
            block = np.rot90(block, int(rng.integers(4)), axes=(1, 2))
            h, w = min(512, size - r, block.shape[1]), min(512, size - c, block.shape[2])
            data[:, r:r + h, c:c + w] = block[:, :h, :w]
    plain = path.with_suffix(".plain.tif")
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32640", "transform": Affine(0.5, 0, 300000.0, 0, -0.5, 2790000.0)}
    with rasterio.open(plain, "w", **profile) as out:
        out.write(data)
        out.descriptions = ("red", "green", "blue")
    rio_copy(plain, path, driver="COG", compress="DEFLATE", blocksize=256)
    plain.unlink()
    return str(path)


class StacServer(_Child):
    """``rustac serve``: a STAC API (in-process memory backend) on ``127.0.0.1:port``, loaded at start with
    a collection and the Items of an ItemCollection file; restart it to load another set."""

    def __init__(self, folder: Path, port: Optional[int] = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        super().__init__(port or free_port(), folder / "rustac.log")
        self.folder = folder

    def command(self) -> list[str]:
        exe = shutil.which("rustac") or os.path.join(os.path.dirname(sys.executable), "rustac")
        return [exe, "serve", "--addr", f"127.0.0.1:{self.port}", str(self.folder / "collection.json"),
                str(self.folder / "items.json")]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def load(self, collection: dict, items: list[dict]) -> "StacServer":
        """(Re)start the server with ``collection`` and ``items``."""
        import json

        self.stop()
        (self.folder / "collection.json").write_text(json.dumps(collection))
        (self.folder / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": items}))
        return self.start()
