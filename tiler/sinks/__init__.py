"""Sinks: the products a run writes from the engine's finished blocks.

One protocol (:class:`Sink`: ``open``, ``write(block)``, ``commit``, ``abort``),
one class per product. Several sinks are fed in one pass by :func:`feed`
(``tiler run --out mask.tif --vector buildings.gpkg`` predicts once). Every sink
writes through a guarded :class:`tiler.destination.Destination`: a temporary
file beside the destination, renamed into place when complete and verified.
"""

from tiler.sinks._base import OutputContext, Sink, feed, not_georeferenced_note
from tiler.sinks._polygonize import POLYGON_BLOCK_ROWS, Polygonizer
from tiler.sinks._raster import ClassMapSink, IndexSink, ProbabilitySink, to_cog
from tiler.sinks._vector import (
    VECTOR_FORMATS,
    PartPolygonSink,
    PolygonSink,
    export_classes,
    load_pieces,
    save_pieces,
    vector_format,
)

__all__ = ["OutputContext", "Sink", "feed", "not_georeferenced_note", "ClassMapSink", "ProbabilitySink", "IndexSink",
           "to_cog", "PolygonSink", "PartPolygonSink", "save_pieces", "load_pieces", "Polygonizer",
           "POLYGON_BLOCK_ROWS", "VECTOR_FORMATS", "vector_format", "export_classes"]
