"""Archives by query: a STAC API search (pystac-client), its Items kept as local scene files."""

from __future__ import annotations

import json
import logging
import operator
import os
import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from tiler._logging import notice
from tiler.errors import StorageUnavailableError, UsageError
from tiler.storage import redact, retries

log = logging.getLogger(__name__)

__all__ = ["StacSearch", "search_items", "keep_items", "parse_query"]

#: ``--query`` comparisons (the STAC API Query extension's operators, written as in Earth Search's docs).
_OPERATORS = {"<=": ("lte", operator.le), ">=": ("gte", operator.ge), "!=": ("neq", operator.ne),
              "<": ("lt", operator.lt), ">": ("gt", operator.gt), "=": ("eq", operator.eq)}
_QUERY_RE = re.compile(r"^\s*(?P<prop>[A-Za-z_][\w:.\-]*)\s*(?P<op><=|>=|!=|<|>|=)\s*(?P<value>.+?)\s*$")


#: What a request that reached no server says (requests/urllib3), as opposed to a server's error answer.
_UNREACHABLE = ("NewConnectionError", "Connection refused", "Name or service not known", "nodename nor servname",
                "Temporary failure in name resolution", "No route to host", "ConnectTimeout")


def _reason(exc: BaseException) -> str:
    """The innermost reason of a requests/urllib3 failure, short."""
    text = str(exc)
    m = re.search(r"\[Errno [^\]]+\] [^'\")]+", text)
    return m.group(0) if m else text[:200]


def parse_query(text: str) -> tuple[str, str, Any]:
    """``("eo:cloud_cover", "<", 20.0)`` of ``"eo:cloud_cover<20"``.

    Raises
    ------
    UsageError
        Not ``PROPERTY OP VALUE`` with OP one of ``< <= > >= = !=``.
    """
    m = _QUERY_RE.match(text)
    if not m:
        raise UsageError(f"--query {text!r}: write PROPERTY OP VALUE with OP one of < <= > >= = != "
                         "(e.g. 'eo:cloud_cover<20')")
    raw = m["value"].strip("'\"")
    try:
        value: Any = float(raw)
    except ValueError:
        value = raw
    return m["prop"], m["op"], value


@dataclass(frozen=True)
class StacSearch:
    """One STAC API search: what ``tiler batch --stac-api`` asks.

    Attributes
    ----------
    api : str
        The API's root URL.
    collections : tuple of str
    bbox : tuple of 4 float or None
        West, south, east, north in degrees (WGS 84).
    datetime : str or None
        An RFC 3339 instant or interval, ``A/B`` (open ends as ``..``).
    query : tuple of str
        Property filters, ``'eo:cloud_cover<20'``.
    max_items : int or None
        At most this many Items (every page is followed up to it).
    """

    api: str
    collections: tuple[str, ...]
    bbox: Optional[tuple[float, float, float, float]] = None
    datetime: Optional[str] = None
    query: tuple[str, ...] = ()
    max_items: Optional[int] = None

    def to_dict(self) -> dict:
        """JSON-ready form (for reports); the API's URL without credentials."""
        return {"api": redact(self.api), "collections": list(self.collections),
                "bbox": list(self.bbox) if self.bbox else None, "datetime": self.datetime,
                "query": list(self.query), "max_items": self.max_items}


def _matches(item, filters: Sequence[tuple[str, str, Any]]) -> bool:
    for prop, op, value in filters:
        have = item.properties.get(prop)
        if have is None:
            return False
        try:
            if not _OPERATORS[op][1](float(have) if isinstance(value, float) else have, value):
                return False
        except (TypeError, ValueError):
            return False
    return True


def search_items(search: StacSearch) -> list:
    """The Items a STAC API returns for a search, every page followed.

    Property filters go to the API as the Query extension where it declares it (``conformsTo``), else
    tiler applies them to the Items returned (said once): the result is the same either way.

    Parameters
    ----------
    search : StacSearch

    Returns
    -------
    list of pystac.Item
        In the API's order.

    Raises
    ------
    UsageError
        The API cannot be reached or is not a STAC API, or a collection it does not have (exit 2).
    StorageUnavailableError
        The API answered with an error (HTTP 4xx/5xx) after the retries (exit 1).
    """
    from pystac_client import Client
    from pystac_client.exceptions import APIError
    from pystac_client.stac_api_io import StacApiIO
    from urllib3 import Retry

    filters = [parse_query(q) for q in search.query]
    n, delay = retries()
    io = StacApiIO(max_retries=Retry(total=n, backoff_factor=delay, status_forcelist=(429, 500, 502, 503, 504),
                                     allowed_methods=None))
    shown = redact(search.api)
    try:
        client = Client.open(search.api, stac_io=io)
    except APIError as exc:
        if any(t in str(exc) for t in _UNREACHABLE):
            raise UsageError(f"STAC API {shown} cannot be reached ({_reason(exc)}); check --stac-api (the URL, "
                             "the network)") from None
        raise StorageUnavailableError(f"STAC API {shown} answered with an error after {n} retries: "
                                      f"{str(exc)[:300]}; run the same command again when it answers") from None
    except Exception as exc:  # requests' ConnectionError, a JSON decode error, a STAC error
        raise UsageError(f"STAC API {shown} cannot be reached or is not a STAC API ({type(exc).__name__}: "
                         f"{str(exc)[:200]}); check --stac-api") from None
    server_side = bool(filters) and client.conforms_to("QUERY")
    if filters and not server_side:
        notice(log, "STAC API %s does not declare the Query extension: the --query filters are applied to the "
               "Items it returns", shown)
    kwargs: dict[str, Any] = {"collections": list(search.collections) or None, "bbox": search.bbox,
                              "datetime": search.datetime}
    if server_side:
        kwargs["query"] = {prop: {_OPERATORS[op][0]: value} for prop, op, value in filters}
    try:
        found = []
        for item in client.search(**kwargs, max_items=None if filters and not server_side else search.max_items,
                                  limit=min(100, search.max_items or 100)).items():
            if not filters or server_side or _matches(item, filters):
                found.append(item)
                if search.max_items is not None and len(found) >= search.max_items:
                    break
    except APIError as exc:
        text = str(exc)
        if "collection" in text.lower() and ("not found" in text.lower() or "404" in text):
            raise UsageError(f"STAC API {shown}: {text[:300]}; check --collection") from None
        raise StorageUnavailableError(f"STAC API {shown} answered with an error after {n} retries: {text[:300]}; "
                                      "run the same command again when it answers") from None
    except Exception as exc:
        raise StorageUnavailableError(f"STAC API {shown}: the search failed ({type(exc).__name__}: "
                                      f"{str(exc)[:200]}); run the same command again") from None
    return found


def keep_items(items: Sequence, folder: str) -> list[str]:
    """Each Item as a JSON file in ``folder`` (``ITEM_ID.json``), written only where new or changed, so that
    a rerun's fingerprints (the file's modification time among them) are unchanged for an unchanged Item.

    Parameters
    ----------
    items : sequence of pystac.Item
    folder : str
        Created if missing (the work folder's ``stac`` sub-folder).

    Returns
    -------
    list of str
        The files, in the Items' order: each a scene for :func:`tiler.scene.open_scene`.
    """
    os.makedirs(folder, exist_ok=True)
    out = []
    for item in items:
        if item.get_self_href():
            item.make_asset_hrefs_absolute()  # relative hrefs resolve against the API, not the local copy
        doc = item.to_dict(include_self_link=True, transform_hrefs=False)
        text = json.dumps(doc, indent=1, sort_keys=True)
        safe = re.sub(r"[^\w.\-]", "_", item.id)
        path = os.path.join(folder, f"{safe}.json")
        try:
            with open(path, encoding="utf-8") as fh:
                same = fh.read() == text
        except OSError:
            same = False
        if not same:
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        out.append(path)
    return out
