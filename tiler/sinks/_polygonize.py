"""Streamed polygonisation of a class map: regions merged across block seams.

Each block is polygonised as it arrives (``rasterio.features.shapes`` on its
class map, with its valid mask). A region that touches a seam still to be
reached (the bottom of the current block, the right edge of the current column
band, the rows of the previous band's right edge below it) is held open as
parts; when the block across that seam arrives, parts of the same class whose
boundaries share a segment there (or a corner, with 8-connectivity) are joined.
A region is unioned once, when it touches no pending seam, and handed out, so
memory is bounded by the regions open at the seams, not by the scene. The
result equals polygonising the whole class map at once.

Geometry is built in pixel coordinates (integer vertices: the touch tests and
unions are exact); :class:`tiler.sinks.PolygonSink` maps it to the scene's CRS.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import numpy as np
import rasterio.features
import shapely
from affine import Affine

__all__ = ["Polygonizer", "POLYGON_BLOCK_ROWS", "Region"]

#: Rows polygonised at once: blocks of a column band are buffered up to this
#: height (8 MB of class map at 8192 columns), so that fewer seams cut regions
#: into parts to join; benchmarks/outputs.py measured 512-row blocks 1.3x slower
#: on a dense real class map.
POLYGON_BLOCK_ROWS = 1024
#: DE-9IM pattern of two seam edges that share a segment (their interiors meet in a
#: line): the pixels on either side share an edge, i.e. are 4-connected.
_SHARED_SEGMENT = "1********"


class Polygonizer:
    """Polygons of a class map fed block by block, merged across block seams.

    Parameters
    ----------
    height, width : int
        The full grid in pixels.
    classes : sequence of int
        Class values to polygonise.
    connectivity : {4, 8}, default 4
        Pixels joined by edges (4) or by edges and corners (8).
    min_rows : int, default 1024
        Rows of a column band polygonised at once (:data:`POLYGON_BLOCK_ROWS`);
        1 polygonises every block as it comes.
    held_rows : sequence of int, optional
        Rows whose seam stays open: the first row of a part of a distributed
        run (the blocks above it are another part's). A region touching it is
        never handed out; :meth:`export_open` gives its pieces, which
        :meth:`import_open` of the assembling polygoniser joins.

    Notes
    -----
    Blocks must come as the engine yields them: column band by column band
    (left to right), strips top to bottom within each, tiling the grid.
    :meth:`add` returns the regions that are complete; after the last block,
    every region has been returned once. Geometries are in pixel coordinates
    (x = column, y = row) with integer vertices; a region merged across a
    seam keeps the vertex where its straight edges crossed the seam (the same
    shape, one collinear vertex more than polygonising at once). With 8-connectivity a region
    whose pixels touch only at corners is one MultiPolygon (a valid OGC
    geometry; GDAL's own polygoniser returns it as one self-touching ring).
    """

    def __init__(self, height: int, width: int, classes: Sequence[int], *, connectivity: int = 4,
                 min_rows: int = POLYGON_BLOCK_ROWS, held_rows: Sequence[int] = ()) -> None:
        if connectivity not in (4, 8):
            raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
        self.height, self.width = int(height), int(width)
        self.held_rows = tuple(int(r) for r in held_rows if 0 < int(r) < int(height))
        self.min_rows = max(1, int(min_rows))
        self._buffer: list[tuple[np.ndarray, np.ndarray, tuple[int, int]]] = []
        self._buffer_cols: Optional[tuple[int, int]] = None
        self.classes = np.asarray(sorted(set(int(c) for c in classes)), np.int64)
        self.connectivity = connectivity
        # The open parts: a region's pieces from each block, joined (union-find) but not yet
        # unioned: each region is unioned once, when it closes, so a region spanning the
        # scene costs one cascaded union rather than one growing union per block.
        self._parts: list = []
        self._edges: list = []  # each part's boundary on its block's edges: small, for the seam tests
        self._stats: list = []  # each part's (pixels, probability sum)
        self._cls: list[int] = []
        self._parent: list[int] = []
        self._block: list[tuple[int, int, int, int]] = []  # each part's block: rows and cols

    @property
    def open_count(self) -> int:
        """Regions held open at a seam (or rows held in the buffer: then at least 1)."""
        return len({self._find(i) for i in range(len(self._parts))}) + bool(self._buffer)

    def _find(self, i: int) -> int:
        parent = self._parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def _shapes(self, class_map: np.ndarray, valid: np.ndarray, rows: tuple[int, int],
                cols: tuple[int, int], probability: Optional[np.ndarray]) -> tuple[list, list, np.ndarray]:
        mask = valid & np.isin(class_map, self.classes)
        if not mask.any():
            return [], [], np.empty((0, 2))
        if mask.all():
            mask = None  # GDAL's polygoniser is faster without a mask band
        # Each connected region gets its own label (SciPy, the same connectivity as GDAL's polygoniser), and the
        # labels are polygonised: one polygon per label, so a region's pixel count and probability sum are
        # bincounts of the label raster, exact, whatever the number of regions.
        labels, label_class = _component_labels(class_map, valid, self.classes, self.connectivity)
        polys, values, ids = [], [], []
        transform = Affine.translation(cols[0], rows[0])
        for geom, label in rasterio.features.shapes(labels, mask=labels > 0 if mask is not None else None,
                                                    connectivity=self.connectivity, transform=transform):
            rings = geom["coordinates"]
            polys.append(shapely.Polygon(rings[0], rings[1:]))
            ids.append(int(label))
            values.append(int(label_class[int(label)]))
        polys = np.asarray(polys, dtype=object)
        if self.connectivity == 8:
            bad = ~shapely.is_valid(polys)
            if bad.any():
                polys[bad] = shapely.make_valid(polys[bad])
        n = len(label_class)
        pixels = np.bincount(labels.ravel(), minlength=n)
        sums = (np.bincount(labels.ravel(), weights=probability.ravel(), minlength=n) if probability is not None
                else np.full(n, np.nan))
        ids = np.asarray(ids, np.int64)
        return list(polys), values, np.column_stack([pixels[ids], sums[ids]]) if len(ids) else np.empty((0, 2))

    def add(self, class_map: np.ndarray, valid: np.ndarray, rows: tuple[int, int],
            cols: tuple[int, int], probability: Optional[np.ndarray] = None) -> list[Region]:
        """Add a block; return the regions now complete.

        Blocks of one column band are buffered until ``min_rows`` rows (or the
        band's last row) and polygonised together.

        Parameters
        ----------
        class_map : ndarray of shape (rows, cols), integer
            Class value per pixel.
        valid : ndarray of shape (rows, cols), bool
            Pixels to polygonise (others are nodata).
        rows, cols : tuple of int
            ``(start, stop)`` of the block in the grid.
        probability : ndarray of shape (rows, cols), optional
            Each pixel's probability of its own class: the regions get the sum
            over their pixels (NaN without it).

        Returns
        -------
        list of Region
            Class value, region (Polygon, or MultiPolygon with 8-connectivity)
            in pixel coordinates, its pixel count and probability sum.
        """
        done: list[Region] = []
        if self._buffer and (cols != self._buffer_cols or rows[0] != self._buffer[-1][2][1]):
            done.extend(self._polygonise_buffer())  # not the next rows of the same column band
        # The probability kept in its own dtype: float32 from the engine, summed in float64 by np.bincount (the
        # same sums as a float64 copy, half its memory).
        self._buffer.append((np.array(class_map, copy=True), np.array(valid, bool, copy=True), rows,
                             None if probability is None else np.array(probability, copy=True)))
        self._buffer_cols = cols
        if rows[1] - self._buffer[0][2][0] >= self.min_rows or rows[1] >= self.height:
            done.extend(self._polygonise_buffer())
        return done

    def _polygonise_buffer(self) -> list[Region]:
        """Polygonise the buffered rows as one block (fewer seams: fewer parts to join and union)."""
        parts, self._buffer = self._buffer, []
        rows, cols = (parts[0][2][0], parts[-1][2][1]), self._buffer_cols
        if len(parts) == 1:
            class_map, valid, probability = parts[0][0], parts[0][1], parts[0][3]
        else:
            class_map = np.concatenate([p[0] for p in parts])
            valid = np.concatenate([p[1] for p in parts])
            probability = None if parts[0][3] is None else np.concatenate([p[3] for p in parts])
        return self._add(class_map, valid, rows, cols, probability)

    def _add(self, class_map: np.ndarray, valid: np.ndarray, rows: tuple[int, int],
             cols: tuple[int, int], probability: Optional[np.ndarray]) -> list[Region]:
        (r0, r1), (c0, c1) = rows, cols
        polys, values, stats = self._shapes(np.ascontiguousarray(class_map), np.ascontiguousarray(valid, bool),
                                            rows, cols, probability)
        done: list[Region] = []
        if polys:
            arr = np.asarray(polys, dtype=object)
            b = shapely.bounds(arr)
            at_seam = (((b[:, 1] == r0) & (r0 > 0)) | ((b[:, 0] == c0) & (c0 > 0))
                       | ((b[:, 3] == r1) & (r1 < self.height)) | ((b[:, 2] == c1) & (c1 < self.width)))
            done = [Region(v, p, int(st[0]), float(st[1]))
                    for p, v, st, s in zip(polys, values, stats, at_seam) if not s]
            if at_seam.any():
                fresh = arr[at_seam]
                self._join(fresh, _block_edges(fresh, rows, cols), [v for v, s in zip(values, at_seam) if s],
                           (r0, r1, c0, c1), stats[at_seam])
        done.extend(self._close(rows, cols))
        return done

    def _join(self, parts: np.ndarray, edges: np.ndarray, classes: list[int], block, stats: np.ndarray) -> None:
        """Add seam parts (of one block, or each of its own block: a list); join each with the open parts it
        touches across a seam."""
        n_old = len(self._parts)
        pairs = np.empty((2, 0), np.int64)
        if n_old:
            old_edges = np.asarray(self._edges, dtype=object)
            pairs = shapely.STRtree(old_edges).query(edges, predicate="intersects")
            # same class, and (4-connectivity) sharing a segment, not just a corner: vectorised
            same = np.asarray(classes, np.int64)[pairs[0]] == np.asarray(self._cls, np.int64)[pairs[1]]
            pairs = pairs[:, same]
            if self.connectivity == 4 and pairs.shape[1]:
                pairs = pairs[:, shapely.relate_pattern(edges[pairs[0]], old_edges[pairs[1]], _SHARED_SEGMENT)]
        self._parts.extend(parts)
        self._edges.extend(edges)
        self._cls.extend(classes)
        self._stats.extend(map(tuple, stats))
        self._block.extend(block if isinstance(block, list) else [block] * len(parts))
        self._parent.extend(range(n_old, n_old + len(parts)))
        for ni, oi in zip(pairs[0].tolist(), pairs[1].tolist()):
            a, b = self._find(n_old + ni), self._find(oi)
            if a != b:
                self._parent[a] = b

    def _region(self, root: int, members: list[int]) -> Region:
        pixels = sum(self._stats[i][0] for i in members)
        total = sum(self._stats[i][1] for i in members)
        geom = self._union(members) if len(members) > 1 else self._parts[members[0]]
        return Region(self._cls[root], geom, int(pixels), float(total))

    def _close(self, rows, cols) -> list[Region]:
        """Union and hand out the regions none of whose parts touches a pending seam."""
        if not self._parts:
            return []
        (_, r1), (c0, c1) = rows, cols
        seams = []
        if r1 < self.height:  # the next strip of this column band
            seams.append([(c0, r1), (c1, r1)])
        if c1 < self.width:  # this band's right edge, rows done so far
            seams.append([(c1, 0), (c1, r1)])
        if c0 > 0 and r1 < self.height:  # the previous band's right edge, rows this band has not reached
            seams.append([(c0, r1), (c0, self.height)])
        for h in self.held_rows:  # another part's rows above: the seam stays open
            seams.append([(0, h), (self.width, h)])
        roots = [self._find(i) for i in range(len(self._parts))]
        if seams:
            touching = shapely.intersects(np.asarray(self._edges, dtype=object), shapely.multilinestrings(seams))
            still_open = {r for r, t in zip(roots, touching) if t}
        else:
            still_open = set()
        groups: dict[int, list[int]] = {}
        for i, r in enumerate(roots):
            groups.setdefault(r, []).append(i)
        done, keep = [], []
        for r, members in groups.items():
            if r in still_open:
                keep.extend(members)
            else:
                done.append(self._region(r, members))
        if done:
            keep.sort()
            index = {old: new for new, old in enumerate(keep)}
            self._parts = [self._parts[i] for i in keep]
            self._edges = [self._edges[i] for i in keep]
            self._cls = [self._cls[i] for i in keep]
            self._stats = [self._stats[i] for i in keep]
            self._block = [self._block[i] for i in keep]
            self._parent = [index[roots[i]] for i in keep]
        return done

    def finish(self) -> list[Region]:
        """The regions still open, unioned (none once every block of the grid was added)."""
        if self._buffer:
            self._polygonise_buffer()
        groups: dict[int, list[int]] = {}
        for i in range(len(self._parts)):
            groups.setdefault(self._find(i), []).append(i)
        done = [self._region(r, m) for r, m in groups.items()]
        self._parts, self._edges, self._cls, self._parent, self._block, self._stats = [], [], [], [], [], []
        return done

    def flush(self) -> list[Region]:
        """Polygonise the buffered rows now (the last rows of a part); return the regions now complete."""
        return self._polygonise_buffer() if self._buffer else []

    def export_open(self) -> dict[str, np.ndarray]:
        """The pieces of the regions still open (at a held row or the part's last row), for another polygoniser.

        Returns
        -------
        dict of str to ndarray
            ``group`` (int64: pieces of one region share it), ``value`` (int64 class), ``geometry`` and
            ``edge`` (WKB, pixel coordinates), ``pixels`` (int64), ``sum`` (float64 probability sum),
            ``block`` (int64 of shape (piece, 4): rows and columns of the block each piece came from).
            :func:`save_pieces` writes it without pickling.
        """
        if self._buffer:
            raise ValueError("rows are still buffered: hand out their regions with flush() first")
        n = len(self._parts)
        out = {"group": np.asarray([self._find(i) for i in range(n)], np.int64),
               "value": np.asarray(self._cls, np.int64).reshape(n),
               "geometry": np.asarray(shapely.to_wkb(np.asarray(self._parts, dtype=object)), dtype=object)
               if n else np.empty(0, object),
               "edge": np.asarray(shapely.to_wkb(np.asarray(self._edges, dtype=object)), dtype=object)
               if n else np.empty(0, object),
               "pixels": np.asarray([st[0] for st in self._stats], np.int64).reshape(n),
               "sum": np.asarray([st[1] for st in self._stats], np.float64).reshape(n),
               "block": np.asarray(self._block, np.int64).reshape(n, 4)}
        self._parts, self._edges, self._cls, self._parent, self._block, self._stats = [], [], [], [], [], []
        return out

    def import_open(self, pieces: dict[str, np.ndarray]) -> None:
        """Add the open pieces of another polygoniser (:meth:`export_open` of a part), joined with those held.

        Pieces of one group stay one region; a piece joins a held one of the same class across a seam as
        blocks do (sharing a segment, or a corner with 8-connectivity). Call :meth:`finish` once every part's
        pieces are in.
        """
        n = len(pieces["group"])
        if not n:
            return
        parts = shapely.from_wkb(pieces["geometry"])
        edges = shapely.from_wkb(pieces["edge"])
        base = len(self._parts)
        self._join(parts, edges, [int(v) for v in pieces["value"]], [tuple(int(x) for x in b) for b in pieces["block"]],
                   np.column_stack([pieces["pixels"].astype(np.float64), pieces["sum"]]))
        first: dict[int, int] = {}
        for k, g in enumerate(pieces["group"].tolist()):  # one region's pieces: linked again
            if g in first:
                a, b = self._find(base + k), self._find(first[g])
                if a != b:
                    self._parent[a] = b
            else:
                first[g] = base + k

    def _union(self, members: list[int]) -> shapely.Geometry:
        """One region from its parts: a coverage union of their shells, their holes put back; exact, and
        linear in the vertices.

        The parts do not overlap and meet only along block seams, but their
        vertices there differ (each part has its own corners); GEOS's coverage
        union needs identical vertices on shared edges, so each part gets a
        vertex at every pixel corner along its own block's seams first, and the
        collinear vertices are dropped after.

        With 4-connectivity a part's holes never reach its block's edges (a
        hole is enclosed by the part's own pixels, inside its block; a pixel on
        the block's edge is outside the part or in it, never enclosed) and hold
        no other part of the region (what a hole encloses is not 4-connected to
        the part, so it is another region), so they are holes of the union as
        they are: only the shells are unioned, which keeps GEOS's cost in
        proportion to the seams. A region that spans a gigapixel scene has tens
        of thousands of holes: the coverage union of the whole parts took 51 s
        for one such region (27,352 holes, 1.8 million vertices), of the shells
        4 s. With 8-connectivity a hole may hold another polygon of the same
        region (an island touching it at a corner), so the whole parts are
        unioned.
        """
        seams = []
        for i in members:
            r0, r1, c0, c1 = self._block[i]
            seams.append(([v for v in (r0, r1) if 0 < v < self.height], [v for v in (c0, c1) if 0 < v < self.width]))
        if self.connectivity == 4:
            shells = [_densify(shapely.polygons(shapely.get_exterior_ring(shapely.get_parts(self._parts[i]))), ys, xs)
                      for i, (ys, xs) in zip(members, seams)]
            union = shapely.coverage_union_all(np.concatenate(shells))
            del shells
            if shapely.get_type_id(union) == 3:  # a Polygon, as a region joined along shared segments is
                # Its shell first (the only ring with seam vertices to drop), then every part's holes as they
                # are: a part's rings have no collinear vertex (the polygoniser's), and a hole none of the
                # union's seams.
                rings = [_drop_collinear_rings(shapely.get_rings(union))]
                del union
                for i in members:
                    parts = shapely.get_parts(self._parts[i])
                    if shapely.get_num_interior_rings(parts).any():
                        found, owner = shapely.get_rings(parts, return_index=True)
                        rings.append(found[np.r_[False, owner[1:] == owner[:-1]]])  # each shell, then its holes
                rings = np.concatenate(rings)
                return shapely.polygons(rings, indices=np.zeros(len(rings), np.intp))[0]
        dense = [_densify(shapely.get_parts(self._parts[i]), ys, xs) for i, (ys, xs) in zip(members, seams)]
        return _drop_collinear(shapely.coverage_union_all(np.concatenate(dense)))


class Region(NamedTuple):
    """A finished region of one class.

    Attributes
    ----------
    value : int
        Class value.
    geometry : shapely geometry
        Polygon (MultiPolygon with 8-connectivity), pixel coordinates.
    pixels : int
        Its pixels.
    probability_sum : float
        The sum over its pixels of each pixel's probability of this class
        (NaN where no probabilities were given): ``probability_sum / pixels``
        is the region's mean probability.
    """

    value: int
    geometry: shapely.Geometry
    pixels: int
    probability_sum: float


def _component_labels(class_map: np.ndarray, valid: np.ndarray, classes: np.ndarray,
                      connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    """A label per connected region of each exported class (0 elsewhere), and each label's class.

    Returns
    -------
    labels : ndarray of shape (rows, cols), int32
    label_class : ndarray of int64
        ``label_class[label]`` (index 0: no region).
    """
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)
    labels = np.zeros(class_map.shape, np.int32)
    region = np.empty(class_map.shape, np.int32)  # one scratch label raster for every class
    label_class = [0]
    for k in classes:
        n = ndimage.label(valid & (class_map == k), structure=structure, output=region)
        if n:
            inside = region > 0
            labels[inside] = region[inside] + (len(label_class) - 1)
            label_class.extend([int(k)] * n)
    return labels, np.asarray(label_class, np.int64)


def _block_edges(polys: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """Per polygon, its boundary segments on the edges of its block, as a MultiLineString.

    Every polygon given touches an edge (its bounds reach it), and an
    orthogonal polygon reaches a line only along a segment of its boundary.
    """
    parts, owner = shapely.get_parts(polys, return_index=True)
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    coords, ridx = shapely.get_coordinates(rings, return_index=True)
    a, b = coords[:-1], coords[1:]
    on = (ridx[:-1] == ridx[1:]) & (((a[:, 1] == b[:, 1]) & np.isin(a[:, 1], rows))
                                   | ((a[:, 0] == b[:, 0]) & np.isin(a[:, 0], cols)))
    lines = shapely.linestrings(np.stack([a[on], b[on]], axis=1))
    return shapely.multilinestrings(lines, indices=owner[ring_part[ridx[:-1][on]]])


def _densify(polys: np.ndarray, ys: Sequence[int], xs: Sequence[int]) -> np.ndarray:
    """Polygons with a vertex at every integer point of their edges on the lines y in ``ys``, x in ``xs``.

    Parameters
    ----------
    polys : ndarray of Polygon
        Orthogonal polygons with integer vertices (pixel boundaries).
    ys, xs : sequence of int
        Horizontal and vertical lines (block seams).

    Returns
    -------
    ndarray of Polygon
        The same polygons (same area and shape) with the extra vertices.
    """
    rings, pidx = shapely.get_rings(polys, return_index=True)
    coords, ridx = shapely.get_coordinates(rings, return_index=True)
    a, b = coords[:-1], coords[1:]
    same = ridx[:-1] == ridx[1:]
    horiz = same & (a[:, 1] == b[:, 1]) & np.isin(a[:, 1], ys)
    vert = same & (a[:, 0] == b[:, 0]) & np.isin(a[:, 0], xs)
    gap = np.zeros(len(coords), np.int64)
    gap[:-1][horiz] = np.abs(b[horiz, 0] - a[horiz, 0]).astype(np.int64) - 1
    gap[:-1][vert] = np.abs(b[vert, 1] - a[vert, 1]).astype(np.int64) - 1
    n = 1 + np.maximum(gap, 0)  # each vertex, then the points inserted after it
    src = np.repeat(np.arange(len(coords)), n)
    step = np.arange(len(src)) - np.repeat(np.cumsum(n) - n, n)
    start = coords[src]
    toward = coords[np.minimum(src + 1, len(coords) - 1)]
    rings = shapely.linearrings(start + np.sign(toward - start) * step[:, None], indices=ridx[src])
    return shapely.polygons(rings, indices=pidx)


def _drop_collinear(geom: shapely.Geometry) -> shapely.Geometry:
    """The same orthogonal (Multi)Polygon without vertices in the middle of a straight edge.

    Every edge of a pixel-boundary polygon is horizontal or vertical, so a
    vertex is redundant exactly when its two neighbours share its x or its y.
    """
    polys = shapely.get_parts(geom)
    rings, pidx = shapely.get_rings(polys, return_index=True)
    out = shapely.polygons(_drop_collinear_rings(rings), indices=pidx)
    return out[0] if len(out) == 1 else shapely.MultiPolygon(list(out))


def _drop_collinear_rings(rings: np.ndarray) -> np.ndarray:
    """:func:`_drop_collinear` of an array of orthogonal LinearRings: the same rings, in order."""
    coords, ridx = shapely.get_coordinates(rings, return_index=True)
    closing = np.r_[ridx[1:] != ridx[:-1], True]  # the closing repeat of each ring's first vertex
    coords, ridx = coords[~closing], ridx[~closing]
    del closing
    n = len(ridx)
    first = np.flatnonzero(np.r_[True, ridx[1:] != ridx[:-1]])
    last = np.r_[first[1:], n] - 1
    prev = np.arange(-1, n - 1)
    prev[first] = last
    nxt = np.arange(1, n + 1)
    nxt[last] = first
    x, y = coords[:, 0], coords[:, 1]
    # a vertex between two neighbours of its own x (or y) is on a straight edge
    keep = ~(((x[prev] == x) & (x[nxt] == x)) | ((y[prev] == y) & (y[nxt] == y)))
    return shapely.linearrings(coords[keep], indices=ridx[keep])  # closes each ring
