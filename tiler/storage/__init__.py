"""Scenes and results where archives live: URLs, object stores and the local work folder.

Rasters are read by rasterio/GDAL wherever GDAL reaches (``https://``, ``s3://``, ``gs://``, ``az://``,
``/vsi...``), with the retries and caching of :data:`GDAL_DEFAULTS`; the errors of a remote read are
explained by :func:`explain` (missing: exit 2 with the URL; refused: exit 2 naming the variables to set;
unreachable after the retries: exit 1). Outputs bound for ``s3://`` are written and verified in a local
work folder (:func:`work_path`) and uploaded whole when the command commits (:func:`upload`).
Credentials come from the environment only and never appear in a message, log, report or journal
(:func:`redact`).
"""

from tiler.storage._store import (
    PART_BYTES,
    check_bucket,
    delete,
    exists,
    explain,
    glob,
    identity,
    read_bytes,
    retries,
    s3_client,
    stat,
    upload,
)
from tiler.storage._urls import (
    GDAL_DEFAULTS,
    READ_SCHEMES,
    WRITE_SCHEMES,
    configure_gdal,
    default_work_dir,
    endpoint_url,
    is_url,
    join,
    name_of,
    redact,
    redact_text,
    scheme_of,
    split_bucket,
    work_path,
)

__all__ = [
    "GDAL_DEFAULTS", "READ_SCHEMES", "WRITE_SCHEMES", "PART_BYTES",
    "is_url", "scheme_of", "split_bucket", "redact", "redact_text", "name_of", "join", "work_path", "default_work_dir",
    "endpoint_url", "configure_gdal",
    "stat", "identity", "check_bucket", "exists", "read_bytes", "glob", "upload", "delete", "explain", "retries",
    "s3_client",
]
