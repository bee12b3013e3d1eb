"""Object-store operations: stat, read, list, upload (verified), delete; GDAL's read errors explained.

Reads of rasters go through rasterio/GDAL (its virtual file systems). What GDAL does not do, listing a
bucket prefix and uploading a finished output, goes through boto3 for S3-compatible stores: it honours
every standard AWS variable (``AWS_PROFILE``, ``AWS_ENDPOINT_URL``, the credentials chain), retries with
backoff, and uploads large files in parts that become the object only when the upload is completed
(``benchmarks/storage.py`` compares it with obstore and s3fs). HTTP(S) documents (a STAC Item, a manifest)
are read with the standard library.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import logging
import os
import time
import urllib.error
import urllib.request
from functools import lru_cache
from typing import Optional

from tiler.errors import (
    OutputExistsError,
    OutputPathError,
    OutputVerificationError,
    SceneReadError,
    StorageAccessError,
    StorageUnavailableError,
    TilerError,
)
from tiler.storage._urls import configure_gdal, endpoint_url, redact, redact_text, scheme_of, split_bucket

log = logging.getLogger(__name__)

#: Uploads at or above this size go in parts of this size (S3 allows 10,000 parts of 5 MiB to 5 GiB:
#: 64 MiB parts reach 640 GiB). The ETag check of :func:`upload` depends on it.
PART_BYTES = 64 << 20

#: What to set, by scheme, where access was refused.
_CREDENTIALS = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), and AWS_ENDPOINT_URL for a "
          "store other than AWS (MinIO ...); for a public bucket set AWS_NO_SIGN_REQUEST=YES",
    "gs": "set GOOGLE_APPLICATION_CREDENTIALS (or GS_ACCESS_KEY_ID and GS_SECRET_ACCESS_KEY); for a public "
          "bucket set GS_NO_SIGN_REQUEST=YES",
    "az": "set AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_ACCESS_KEY or AZURE_STORAGE_SAS_TOKEN; for a public "
          "container set AZURE_NO_SIGN_REQUEST=YES",
    "http": "set GDAL_HTTP_AUTH with GDAL_HTTP_USERPWD, or GDAL_HTTP_HEADERS (e.g. 'Authorization: Bearer "
            "...'), or use a signed URL",
}
_MISSING_TEXT = ("404", "does not exist", "nosuchkey", "nosuchbucket", "not found")
_DENIED_TEXT = ("403", "401", "accessdenied", "access denied", "invalidaccesskeyid", "signaturedoesnotmatch",
                "forbidden", "unauthorized", "credentials", "invalidtoken", "expiredtoken")
_DOWN_TEXT = ("curl error", "500", "502", "503", "504", "timed out", "timeout", "could not resolve",
              "connection refused", "could not connect", "couldn't connect", "connection reset")


def _credentials_hint(url: str) -> str:
    scheme = scheme_of(url)
    if scheme == "vsi":
        scheme = next((s for s in ("s3", "gs", "az") if url.startswith(f"/vsi{s}")), "http")
    return _CREDENTIALS.get("http" if scheme == "https" else scheme, _CREDENTIALS["http"])


def retries() -> tuple[int, float]:
    """``(retries, first delay in seconds)`` of a remote operation: GDAL's ``GDAL_HTTP_MAX_RETRY`` and
    ``GDAL_HTTP_RETRY_DELAY`` (as :func:`tiler.storage.configure_gdal` sets them), used by tiler's own
    requests too."""
    configure_gdal()
    try:
        return int(os.environ["GDAL_HTTP_MAX_RETRY"]), float(os.environ["GDAL_HTTP_RETRY_DELAY"])
    except (KeyError, ValueError):
        return 4, 1.0


def explain(url: str, message: str, what: str = "scene", *, probe: bool = False) -> Optional[TilerError]:
    """tiler's error for a failed remote read whose GDAL (or client) message is ``message``, or None.

    Parameters
    ----------
    url : str
        The remote path read.
    message : str
        The error text (rasterio's ``RasterioIOError``, GDAL's messages, an HTTP status line).
    what : str, default "scene"
        What was read, for the message ("scene", "asset 'B04' of STAC Item 'x'", "--model").
    probe : bool, default False
        Where the message says nothing of the cause (GDAL's "Read failed"), ask the server for the object
        once (``s3://`` and ``http(s)://``): a server that does not answer makes it unavailable.

    Returns
    -------
    SceneReadError, StorageAccessError, StorageUnavailableError or None
        Missing (exit 2, "does not exist" with the URL), refused (exit 2, naming the variables to set),
        unreachable or a server error after the retries (exit 1, naming the URL); None where the message
        is none of these (the caller's own message applies).
    """
    message = redact_text(message or "")
    text = message.lower()
    shown = redact(url)
    if any(t in text for t in _DENIED_TEXT):
        return StorageAccessError(f"{what} {shown}: access refused ({message.strip()}); {_credentials_hint(url)}")
    if any(t in text for t in _MISSING_TEXT):
        # GDAL says "does not exist" for an object it could not stat, refused access (403) included: the
        # store's own answer to one request tells which.
        if scheme_of(url) in ("s3", "http", "https"):
            try:
                size = stat(url, what)
            except TilerError as exc:
                return exc
            if size is not None:
                return SceneReadError(f"{what} {shown} exists but GDAL cannot read it ({message.strip()}); "
                                      "check that it is a raster GDAL reads")
        return SceneReadError(f"{what} {shown} does not exist; check the URL (bucket, key or path, and spelling)")
    if any(t in text for t in _DOWN_TEXT):
        n, _ = retries()
        return StorageUnavailableError(
            f"{what} {shown} could not be read after {n} retries ({message.strip()}); check that the server "
            "answers and run the same command again")
    if probe and scheme_of(url) in ("s3", "http", "https"):
        try:
            if stat(url, what) is None:
                return SceneReadError(f"{what} {shown}: the object is gone (it was read earlier in this run); "
                                      "check the store")
        except TilerError as exc:
            return exc
    return None


# --- S3 through boto3 -----------------------------------------------------------------


@lru_cache(maxsize=8)
def _s3_client(endpoint: Optional[str], unsigned: bool, pid: int, identity: tuple):
    """One boto3 S3 client per endpoint, credentials and process (clients are thread-safe, not fork-safe)."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    n, _ = retries()
    config = Config(retries={"max_attempts": n + 1, "mode": "standard"}, connect_timeout=10, read_timeout=60,
                    signature_version=UNSIGNED if unsigned else None,
                    s3={"addressing_style": "path" if endpoint else "auto"})
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)


def s3_client():
    """The boto3 S3 client of this process, configured from the environment (see :func:`configure_gdal`).

    Raises
    ------
    StorageAccessError
        boto3 is not installed (``pip install 'tiler[s3]'``).
    """
    try:
        import boto3  # noqa: F401
    except ImportError:
        raise StorageAccessError("writing to or listing s3:// needs boto3: pip install 'tiler[s3]'") from None
    unsigned = os.environ.get("AWS_NO_SIGN_REQUEST", "").upper() in ("YES", "TRUE", "ON", "1")
    identity = tuple(os.environ.get(k) for k in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                   "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION"))
    return _s3_client(endpoint_url(), unsigned, os.getpid(), identity)


def _s3_error(url: str, exc: BaseException, what: str) -> TilerError:
    """tiler's error for a boto3/botocore failure on ``url``."""
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return StorageAccessError(f"{what} {redact(url)}: no credentials found; {_CREDENTIALS['s3']}")
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = f"HTTP {status} {err.get('Code', '')} {err.get('Message', '')}".strip()
        if status in (401, 403) or err.get("Code") in ("AccessDenied", "InvalidAccessKeyId",
                                                          "SignatureDoesNotMatch"):
            return StorageAccessError(f"{what} {redact(url)}: access refused ({message}); {_CREDENTIALS['s3']}")
        if status == 404 or err.get("Code") in ("NoSuchKey", "NoSuchBucket", "404"):
            return SceneReadError(f"{what} {redact(url)} does not exist ({message}); check the bucket and key")
        return StorageUnavailableError(f"{what} {redact(url)} failed after the client's retries ({message}); "
                                       "run the same command again when the store answers")
    return StorageUnavailableError(f"{what} {redact(url)} failed after the client's retries "
                                   f"({type(exc).__name__}: {exc}); check that the store answers "
                                   "(AWS_ENDPOINT_URL) and run the same command again")


def stat(url: str, what: str = "output") -> Optional[int]:
    """The size in bytes of the object at ``url``, or None where there is none.

    Parameters
    ----------
    url : str
        ``s3://bucket/key`` (boto3's ``HeadObject``) or ``http(s)://`` (a ``HEAD`` request).
    what : str, default "output"
        What the object is, for messages.

    Returns
    -------
    int or None

    Raises
    ------
    StorageAccessError
        Access refused (exit 2).
    StorageUnavailableError
        The server did not answer, or answered 5xx, after the retries (exit 1).
    """
    scheme = scheme_of(url)
    if scheme == "s3":
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_bucket(url)
        try:
            head = s3_client().head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404:
                if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
                    raise SceneReadError(f"{what} {redact(url)}: bucket {bucket!r} does not exist; create it "
                                         "first or check the name") from None
                return None
            raise _s3_error(url, exc, what) from None
        except BotoCoreError as exc:
            raise _s3_error(url, exc, what) from None
        return int(head["ContentLength"])
    if scheme in ("http", "https"):
        try:
            with _urlopen(url, method="HEAD", what=what) as resp:
                size = resp.headers.get("Content-Length")
                return int(size) if size is not None else 0
        except SceneReadError:
            return None
    raise StorageAccessError(f"{what} {redact(url)}: tiler checks objects over s3:// and http(s):// only")


def identity(url: str) -> dict:
    """What identifies the object at ``url`` now, for a run's fingerprint: its size and ETag (or
    ``Last-Modified``), so that an object replaced under the same key is another input.

    Returns
    -------
    dict
        ``{"path": the URL without credentials, "size", "etag"}``; only ``path`` for a scheme tiler does not
        query itself (``gs://``, ``az://``, ``/vsi...``) or where the server did not answer.
    """
    out: dict = {"path": redact(url)}
    scheme = scheme_of(url)
    try:
        if scheme == "s3":
            bucket, key = split_bucket(url)
            head = s3_client().head_object(Bucket=bucket, Key=key)
            out.update(size=int(head["ContentLength"]), etag=head.get("ETag", "").strip('"'))
        elif scheme in ("http", "https"):
            with _urlopen(url, method="HEAD", what="input") as resp:
                out.update(size=int(resp.headers.get("Content-Length") or 0),
                           etag=(resp.headers.get("ETag") or resp.headers.get("Last-Modified") or "").strip('"'))
    except Exception as exc:  # the fingerprint is best effort: the read says what is wrong with the input
        log.debug("no identity for %s: %s", redact(url), exc)
    return out


def check_bucket(url: str, what: str = "output") -> None:
    """Check that the bucket of an ``s3://`` output exists and answers, before any work.

    Raises
    ------
    OutputPathError
        The bucket does not exist (exit 2).
    StorageAccessError, StorageUnavailableError
        As for :func:`stat`.
    """
    from botocore.exceptions import BotoCoreError, ClientError


    bucket, _ = split_bucket(url)
    try:
        s3_client().head_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            raise OutputPathError(f"{what} {redact(url)}: bucket {bucket!r} does not exist; create it first or "
                                  "check the name (and AWS_ENDPOINT_URL)") from None
        raise _s3_error(url, exc, what) from None
    except BotoCoreError as exc:
        raise _s3_error(url, exc, what) from None


def exists(url: str, what: str = "output") -> bool:
    """Whether an object exists at ``url`` (see :func:`stat`)."""
    return stat(url, what) is not None


def _http_headers() -> dict:
    """Request headers from GDAL's ``GDAL_HTTP_HEADERS`` and ``GDAL_HTTP_USERPWD`` (basic auth), so that
    tiler's own requests carry what GDAL's do."""

    headers = {"User-Agent": "tiler"}
    for line in os.environ.get("GDAL_HTTP_HEADERS", "").replace("\r\n", "\n").split("\n"):
        name, sep, value = line.partition(":")
        if sep and name.strip():
            headers[name.strip()] = value.strip()
    userpwd = os.environ.get("GDAL_HTTP_USERPWD")
    if userpwd:
        headers["Authorization"] = "Basic " + base64.b64encode(userpwd.encode("utf-8")).decode("ascii")
    return headers


def _urlopen(url: str, *, method: str = "GET", what: str = "document"):
    """An HTTP response for ``url``, retried on 429/5xx and dropped connections (GDAL's retry settings)."""
    n, delay = retries()
    request = urllib.request.Request(url, method=method, headers=_http_headers())
    for attempt in range(n + 1):
        try:
            return urllib.request.urlopen(request, timeout=float(os.environ.get("GDAL_HTTP_TIMEOUT", 60)))
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                raise SceneReadError(f"{what} {redact(url)} does not exist (HTTP {exc.code}); check the URL") from None
            if exc.code in (401, 403):
                raise StorageAccessError(f"{what} {redact(url)}: access refused (HTTP {exc.code}); "
                                         f"{_CREDENTIALS['http']}") from None
            if exc.code not in (429, 500, 502, 503, 504) or attempt == n:
                raise StorageUnavailableError(f"{what} {redact(url)}: HTTP {exc.code} {exc.reason} after {n} "
                                              "retries; run the same command again when the server answers") from None
        except (urllib.error.URLError, OSError) as exc:
            if attempt == n:
                reason = getattr(exc, "reason", exc)
                raise StorageUnavailableError(f"{what} {redact(url)} could not be reached after {n} retries "
                                              f"({reason}); check that the server answers and run the same "
                                              "command again") from None
        time.sleep(delay * 2 ** attempt)
    raise AssertionError("unreachable")


def read_bytes(url: str, what: str = "document") -> bytes:
    """The whole object at ``url`` (a STAC Item, a manifest, a list of scenes).

    Raises
    ------
    SceneReadError
        It does not exist (exit 2).
    StorageAccessError, StorageUnavailableError
        As for :func:`stat`.
    """
    scheme = scheme_of(url)
    if scheme == "s3":
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_bucket(url)
        try:
            return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise _s3_error(url, exc, what) from None
    if scheme in ("http", "https"):
        with _urlopen(url, what=what) as resp:
            return resp.read()
    raise StorageAccessError(f"{what} {redact(url)}: tiler reads documents over s3:// and http(s):// only; "
                             "rasters are read from anywhere GDAL reaches")


def glob(pattern: str) -> list[str]:
    """The objects of a bucket whose URLs match a shell pattern (``s3://bucket/scenes/*.tif``).

    The prefix before the first wildcard is listed through the store's API (``ListObjectsV2``, every page);
    the pattern is matched against the whole key (``*`` also crosses ``/``, as in a bucket there are no
    folders).

    Parameters
    ----------
    pattern : str
        ``s3://bucket/prefix*pattern``.

    Returns
    -------
    list of str
        Sorted ``s3://`` URLs.

    Raises
    ------
    UsageError
        A scheme other than ``s3://`` (an HTTP server cannot be listed).
    StorageAccessError, StorageUnavailableError, SceneReadError
        As for :func:`stat`; a missing bucket.
    """
    if scheme_of(pattern) != "s3":
        raise StorageAccessError(f"cannot list {redact(pattern)}: tiler lists s3:// prefixes only (an HTTP server "
                                 "has no listing); pass the URLs one by one, in a list file, or as a STAC Item")
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key_pattern = split_bucket(pattern)
    cut = min((i for i, c in enumerate(key_pattern) if c in "*?["), default=len(key_pattern))
    prefix = key_pattern[:cut]
    found = []
    try:
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", ()):
                if fnmatch.fnmatchcase(obj["Key"], key_pattern):
                    found.append(f"s3://{bucket}/{obj['Key']}")
    except (ClientError, BotoCoreError) as exc:
        raise _s3_error(pattern, exc, "listing") from None
    return sorted(found)


def _etag(path: str, size: int) -> str:
    """The ETag S3 gives ``path`` uploaded by :func:`upload`: the MD5 of the bytes, or for a multipart upload
    the MD5 of the parts' MD5s and ``-N`` (`AWS: checking object integrity
    <https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html>`_)."""
    digests = []
    with open(path, "rb") as f:
        while True:
            chunk = f.read(PART_BYTES)
            if not chunk:
                break
            digests.append(hashlib.md5(chunk, usedforsecurity=False).digest())
    if size < PART_BYTES:
        return (digests[0] if digests else hashlib.md5(b"", usedforsecurity=False).digest()).hex()
    return hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest() + f"-{len(digests)}"


_CONTENT_TYPES = {".tif": "image/tiff; application=geotiff", ".tiff": "image/tiff; application=geotiff",
                  ".json": "application/json", ".geojson": "application/geo+json", ".html": "text/html",
                  ".htm": "text/html", ".gpkg": "application/geopackage+sqlite3",
                  ".fgb": "application/vnd.flatgeobuf", ".parquet": "application/vnd.apache.parquet",
                  ".csv": "text/csv"}


def upload(path: str, url: str, *, overwrite: bool) -> dict:
    """Upload a complete local file to ``url`` so that the object appears only whole, then check it.

    A file under :data:`PART_BYTES` is one ``PUT``; a larger one a multipart upload, which the store
    makes the object only when the upload is completed (an interrupted one leaves no object, and is
    aborted). After it, the object's size and ETag are compared with the file's (MD5, or the multipart
    form of it).

    Parameters
    ----------
    path : str
        The local file (complete and verified by its writer).
    url : str
        ``s3://bucket/key``.
    overwrite : bool
        Whether an existing object may be replaced; without it one that appeared meanwhile is refused.

    Returns
    -------
    dict
        ``{"url", "bytes", "etag", "seconds"}``.

    Raises
    ------
    OutputExistsError
        ``overwrite`` is false and the object exists (exit 2).
    OutputVerificationError
        The object's size or ETag differs from the file's; the object is deleted (exit 4).
    StorageAccessError, StorageUnavailableError
        As for :func:`stat`.
    """
    from boto3.s3.transfer import TransferConfig
    from botocore.exceptions import BotoCoreError, ClientError


    t = time.perf_counter()
    bucket, key = split_bucket(url)
    if not overwrite and exists(url):
        raise OutputExistsError(f"output {redact(url)} was created by someone else while tiler ran; it was left "
                                "as it is and tiler's result discarded. Pass --overwrite to replace it")
    size = os.path.getsize(path)
    extra = {"ContentType": _CONTENT_TYPES.get(os.path.splitext(path)[1].lower(), "application/octet-stream")}
    config = TransferConfig(multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES, max_concurrency=4)
    try:
        s3_client().upload_file(path, bucket, key, ExtraArgs=extra, Config=config)
        head = s3_client().head_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError) as exc:
        raise _s3_error(url, exc, "uploading") from None
    except Exception as exc:  # boto3's transfer manager wraps the cause in S3UploadFailedError
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, (ClientError, BotoCoreError)):
            raise _s3_error(url, cause, "uploading") from None
        raise _s3_error(url, exc, "uploading") from None
    etag = head.get("ETag", "").strip('"')
    expected = _etag(path, size)
    if int(head["ContentLength"]) != size or etag != expected:
        delete(url)
        raise OutputVerificationError(
            f"uploaded {redact(url)} is not the file written: {head['ContentLength']} bytes, ETag {etag}, where "
            f"the file has {size} bytes, ETag {expected}; the object was deleted: run the same command again")
    seconds = time.perf_counter() - t
    log.info("uploaded %s (%d bytes, %.1f s)", redact(url), size, seconds)
    return {"url": redact(url), "bytes": size, "etag": etag, "seconds": round(seconds, 3)}


def delete(url: str) -> None:
    """Delete the object at ``url`` (no error where there is none).

    Raises
    ------
    StorageAccessError, StorageUnavailableError
        As for :func:`stat`.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_bucket(url)
    try:
        s3_client().delete_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError) as exc:
        raise _s3_error(url, exc, "deleting") from None
