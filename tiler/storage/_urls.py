"""Remote locations: which strings are URLs, how they are shown, and GDAL's settings for reading them."""

from __future__ import annotations

import hashlib
import os
import re
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

#: URL schemes tiler reads through GDAL's virtual file systems (rasterio maps them: ``s3://`` to
#: ``/vsis3/``, ``https://`` to ``/vsicurl/``, ``gs://`` to ``/vsigs/``, ``az://`` to ``/vsiaz/``).
READ_SCHEMES = ("http", "https", "s3", "gs", "az")
#: URL schemes tiler writes to (an S3-compatible object store: AWS S3, MinIO, Ceph, R2, ...).
WRITE_SCHEMES = ("s3",)

#: GDAL configuration tiler sets for remote reads unless the environment sets them (GDAL reads its
#: configuration options from environment variables; `GDAL's configuration options
#: <https://gdal.org/en/stable/user/configoptions.html>`_ and `its network-based file systems
#: <https://gdal.org/en/stable/user/virtual_file_systems.html#network-based-file-systems>`_).
GDAL_DEFAULTS = {
    # Opening a remote file does not list its "folder" looking for sidecar files (one request saved per
    # open, thousands on a large bucket prefix).
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # A transient failure (HTTP 429, 500, 502, 503, 504, a dropped connection) is retried with a
    # growing delay before the read fails: 4 tries after the first, 1 s then doubling.
    "GDAL_HTTP_MAX_RETRY": "4",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_CONNECTTIMEOUT": "10",
    "GDAL_HTTP_TIMEOUT": "60",
    # Every byte range fetched once per run: GDAL's cache of fetched ranges, shared by every dataset of the
    # process, holds 64 MiB (GDAL's default: 16 MiB). A run reads some tiles twice, for the input-domain
    # check's sample (up to 256 small windows) and then in the stream; on a scene of up to ~64 MB of
    # tiles the second read is a cache hit (benchmarks/storage.py: 1.00x the tile bytes on a 4096^2
    # COG, 2.00x with the default cache), on a larger one the sample is a small share of the scene.
    # Neighbouring tiles of a window are fetched in one request (GDAL merges consecutive ranges).
    "CPL_VSIL_CURL_CACHE_SIZE": str(64 << 20),
}

_URL_RE = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://")
#: Query parameters that carry credentials (pre-signed S3 URLs, Azure SAS tokens, API keys).
_SECRET_PARAMS = re.compile(r"(?i)^(x-amz-(signature|credential|security-token)|sig|signature|se|sp|sv|st|spr|"
                            r"token|access_token|api_key|apikey|key|code|x-goog-signature|x-goog-credential)$")


def is_url(path: object) -> bool:
    """Whether ``path`` names a remote object: ``http(s)://``, ``s3://``, ``gs://``, ``az://`` or ``/vsi...``.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    bool
        False for a local path (``file://`` URLs included) and for GDAL's local virtual file systems
        (``/vsizip/local.zip``, ``/vsimem/``).
    """
    if not isinstance(path, str):
        return False
    m = _URL_RE.match(path)
    if m:
        return m["scheme"].lower() in READ_SCHEMES
    return path.startswith(("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss", "/vsiswift",
                            "/vsiwebhdfs", "/vsihdfs"))


def scheme_of(url: str) -> str:
    """The scheme of a URL (``s3``, ``https``, ...) or ``vsi`` for a GDAL path."""
    m = _URL_RE.match(url)
    return m["scheme"].lower() if m else "vsi"


def split_bucket(url: str) -> tuple[str, str]:
    """``("bucket", "key/of/object.tif")`` of an ``s3://bucket/key`` URL.

    Raises
    ------
    ValueError
        If ``url`` is not an ``s3://`` URL with a bucket.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "s3" or not parts.netloc:
        raise ValueError(f"{url!r} is not an s3://bucket/key URL")
    return parts.netloc, parts.path.lstrip("/")


def redact(url: str) -> str:
    """``url`` as it may be shown in a message, a log, a report or a journal: no user, password or token.

    Credentials reach tiler through the environment (``AWS_*``, ``GDAL_HTTP_*``), but a user may paste a
    pre-signed URL or one with ``user:password@``: its secret parts are replaced by ``REDACTED``.

    Parameters
    ----------
    url : str

    Returns
    -------
    str
    """
    if not isinstance(url, str) or not _URL_RE.match(url):
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "REDACTED@" + netloc.rsplit("@", 1)[1]
    query = "&".join(
        f"{k}=REDACTED" if _SECRET_PARAMS.match(k) else (f"{k}={v}" if sep else k)
        for k, sep, v in (q.partition("=") for q in parts.query.split("&") if q)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_IN_TEXT = re.compile(r"(?:[a-zA-Z][a-zA-Z0-9+.-]*://|/vsi[a-z0-9_]+/)[^\s'\"<>]+")


def redact_text(text: str) -> str:
    """``text`` (an error message of GDAL or a client) with every URL in it :func:`redact`-ed.

    Parameters
    ----------
    text : str

    Returns
    -------
    str
    """
    def one(m: "re.Match[str]") -> str:
        found = m.group(0)
        if found.startswith("/vsi"):  # /vsicurl/https://...: the URL after the prefix
            prefix, sep, rest = found.partition("/http")
            return prefix + sep + redact("http" + rest)[4:] if sep else found
        return redact(found)

    return _IN_TEXT.sub(one, text)


def name_of(url: str) -> str:
    """The last part of a URL's path (``mask.tif`` of ``s3://b/out/mask.tif?x=1``)."""
    path = urlsplit(url).path if _URL_RE.match(url) else url
    return path.rstrip("/").rsplit("/", 1)[-1]


def join(base: str, name: str) -> str:
    """``base`` (a URL prefix, with or without its ``/``) joined with a relative ``name``."""
    return base.rstrip("/") + "/" + name.lstrip("/")


def work_path(url: str, work_dir: str) -> str:
    """The local file in the work folder that stands for the remote output ``url``.

    Stable across runs (a rerun finds the journal and the parts of an interrupted one): a sub-folder
    named by the SHA-256 of the URL (without its query), holding a file of the URL's name.

    Parameters
    ----------
    url : str
    work_dir : str
        The work folder (``--work-dir``).

    Returns
    -------
    str
        ``WORK_DIR/<16 hex digits>/<name>``; the sub-folder is not created.
    """
    key = urlunsplit(urlsplit(url)._replace(query="", fragment=""))
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return os.path.join(os.path.abspath(work_dir), digest, name_of(url))


def default_work_dir() -> str:
    """The work folder for remote outputs: ``$TILER_WORK_DIR``, else ``$XDG_CACHE_HOME/tiler/work``
    (``~/.cache/tiler/work``)."""
    given = os.environ.get("TILER_WORK_DIR")
    if given:
        return os.path.abspath(given)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "tiler", "work")


def endpoint_url() -> Optional[str]:
    """The S3 endpoint the environment names (``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, or GDAL's
    ``AWS_S3_ENDPOINT`` with ``AWS_HTTPS``), as a URL; None for AWS itself."""
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(var):
            return os.environ[var].rstrip("/")
    host = os.environ.get("AWS_S3_ENDPOINT")
    if host:
        if _URL_RE.match(host):
            return host.rstrip("/")
        https = os.environ.get("AWS_HTTPS", "YES").upper() not in ("NO", "FALSE", "OFF", "0")
        return f"{'https' if https else 'http'}://{host.rstrip('/')}"
    return None


def configure_gdal() -> None:
    """Set GDAL's configuration for remote reads in this process's environment, where not set already.

    :data:`GDAL_DEFAULTS`, and GDAL's form of an S3 endpoint given the way boto3 and the AWS CLI take it
    (``AWS_ENDPOINT_URL=http://127.0.0.1:9000`` becomes ``AWS_S3_ENDPOINT=127.0.0.1:9000``,
    ``AWS_HTTPS=NO`` and path-style requests, ``AWS_VIRTUAL_HOSTING=FALSE``, as MinIO and most
    S3-compatible servers need), so that one set of variables serves both. Credentials are never read or
    copied here: GDAL and boto3 take them from the environment themselves. Idempotent.
    """
    for key, value in GDAL_DEFAULTS.items():
        os.environ.setdefault(key, value)
    url = endpoint_url()
    if url and not os.environ.get("AWS_S3_ENDPOINT"):
        parts = urlsplit(url)
        os.environ["AWS_S3_ENDPOINT"] = parts.netloc + parts.path
        os.environ.setdefault("AWS_HTTPS", "NO" if parts.scheme == "http" else "YES")
    if url:
        os.environ.setdefault("AWS_VIRTUAL_HOSTING", "FALSE")
