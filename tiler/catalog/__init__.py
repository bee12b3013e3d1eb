"""Archives by query and results as STAC: a STAC API search in, a STAC Item for every result out.

:func:`search_items` asks a STAC API (pystac-client) for the Items of a search; :func:`keep_items` keeps
each as a local Item file that :func:`tiler.scene.open_scene` reads like any other (its band assets
chosen by the model's channels, their hrefs read where they are). :func:`result_item` describes a
result: the class map (classification extension), its polygons, report and page, the processing that
made it (processing extension) and the model (Machine Learning Model extension,
:func:`tiler.model.mlm_properties`),
with a ``derived_from`` link to the source.
"""

from tiler.catalog._items import EXTENSIONS, catalog_document, result_item, source_item
from tiler.catalog._publish import describe_items, publish_batch
from tiler.catalog._search import StacSearch, keep_items, parse_query, search_items

__all__ = ["StacSearch", "search_items", "keep_items", "parse_query", "describe_items", "EXTENSIONS",
           "result_item", "catalog_document", "source_item", "publish_batch"]
