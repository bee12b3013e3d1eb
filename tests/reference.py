"""Test oracles and reference models, independent of the code under test.

The models are real Keras models saved as real tiler model files; the
closed-form ones (constant, channel mix) give an exact expected output that
does not come from tiler's blending code.
"""

from __future__ import annotations

import numpy as np

MIX_W = np.array([[0.5, -0.25, 1.0], [0.125, 0.75, -0.5]], np.float32)  # (class, channel)
MIX_B = np.array([0.1, -0.2], np.float32)
MIX_OFFSET = (10.0, 20.0, 30.0)
MIX_SCALE = (50.0, 60.0, 70.0)
RGB = ("red", "green", "blue")


def uint8_domain(channels):
    """The training domain of a model trained on 8-bit images (0..255 in every channel)."""
    from tiler.domain import ChannelDomain, InputDomain

    return InputDomain(tuple(ChannelDomain(c, "uint8", 0.0, 255.0) for c in channels))


def build_tiny_unet(path, *, channels=RGB, classes=("a", "b", "c"), seed=0, depth=2, patch_size=32, domain=None,
                    inference=None):
    import keras

    from tiler.model import build_unet, save_model

    keras.utils.set_random_seed(seed)
    net = build_unet(len(channels), len(classes), depth=depth, base_filters=4, dropout=0.0)
    colours = ["#FF0000", "#00FF00", "#0000FF", "#FFFF00", "#00FFFF", "#FF00FF"][: len(classes)]
    save_model(net, path, channels=channels, classes=classes, colours=colours,
               normalization={"offset": [100.0] * len(channels), "scale": [50.0] * len(channels)},
               patch_size=patch_size, depth=depth, inference=inference,
               domain=uint8_domain(channels) if domain is None and tuple(channels) == RGB else domain)
    return str(path)


def _linear_model(path, kernel, bias, *, channels, classes, offset, scale, patch_size=32):
    import keras

    from tiler.model import save_model

    inp = keras.Input(shape=(None, None, len(channels)))
    layer = keras.layers.Conv2D(len(classes), 1, activation=None, name="mix")
    out = layer(inp)
    net = keras.Model(inp, out)
    layer.set_weights([kernel.T[None, None].astype(np.float32), bias.astype(np.float32)])
    colours = ["#FF0000", "#00FF00", "#0000FF"][: len(classes)]
    save_model(net, path, channels=channels, classes=classes, colours=colours,
               normalization={"offset": list(offset), "scale": list(scale)},
               patch_size=patch_size, depth=0, activation="sigmoid")
    return str(path)


def build_constant_model(path, values, *, channels=RGB):
    k = len(values)
    return _linear_model(path, np.zeros((k, len(channels)), np.float32), np.asarray(values, np.float32),
                         channels=channels, classes=tuple(f"c{i}" for i in range(k)),
                         offset=[0.0] * len(channels), scale=[1.0] * len(channels))


def build_mix_model(path):
    return _linear_model(path, MIX_W, MIX_B, channels=RGB, classes=("p", "q"),
                         offset=MIX_OFFSET, scale=MIX_SCALE)


def mix_expected(image: np.ndarray) -> np.ndarray:
    """Closed-form output of the mix model on (channel, row, col) -> (class, row, col)."""
    x = (image.astype(np.float64) - np.asarray(MIX_OFFSET)[:, None, None]) / np.asarray(MIX_SCALE)[:, None, None]
    return np.einsum("kc,crs->krs", MIX_W.astype(np.float64), x) + MIX_B[:, None, None]


def reflect_pad_oracle(n: int, start: int, stop: int) -> np.ndarray:
    """Indices by NumPy's own reflect padding, for comparison."""
    before, after = max(0, -start), max(0, stop - n)
    padded = np.pad(np.arange(n), (before, after), mode="reflect")
    return padded[start + before: stop + before]


def covering_patches(origins, patch, start, stop):
    """Brute force: indices of patches [o, o + patch) that intersect [start, stop)."""
    return [i for i, o in enumerate(origins) if o < stop and o + patch > start]


# ---------------------------------------------------------------- NumPy twins of the numba kernels

def accumulate_twin(mean, weight, preds, window, rows, cols):
    """Plain NumPy: the same West update, patch by patch, in place."""
    p = window.shape[0]
    for pred, r, c in zip(preds, rows, cols):
        w = weight[r:r + p, c:c + p]
        w += window
        m = mean[:, r:r + p, c:c + p]
        m += (window / w) * (pred - m)


def emit_class_twin(mean, valid, r0, c0, shape, nodata):
    out = np.argmax(mean[:, r0:r0 + shape[0], c0:c0 + shape[1]], axis=0).astype(np.uint8)
    out[~valid] = nodata
    return out


def emit_probability_twin(mean, valid, r0, c0, shape, nodata):
    out = mean[:, r0:r0 + shape[0], c0:c0 + shape[1]].copy()
    out[:, ~valid] = nodata
    return out


def d4_twin(a, t):
    """Transform t with np.rot90 and slicing, independently of tiler.blend."""
    out = np.rot90(a, t % 4, axes=(-2, -1))
    return np.ascontiguousarray(out[..., ::-1] if t >= 4 else out)


def d4_untwin(a, t):
    if t >= 4:
        a = a[..., ::-1]
    return np.ascontiguousarray(np.rot90(a, -(t % 4), axes=(-2, -1)))


def naive_blend(image, fn, patch, stride, window):
    """Whole-image blend written from the definition: reflect-pad, every patch, sum(w p) / sum(w).

    image (C, H, W); fn maps (C, P, P) -> (K, P, P). Uses float64 sums.
    """
    c, h, w = image.shape
    margin = (patch - stride) // 2

    def count(n):
        span = n + 2 * margin - patch
        return 1 if span <= 0 else -(-span // stride) + 1

    nr, nc = count(h), count(w)
    top, left = margin, margin
    bottom = max(0, -margin + (nr - 1) * stride + patch - h)
    right = max(0, -margin + (nc - 1) * stride + patch - w)
    mode = "reflect" if min(h, w) > 1 else "edge"
    padded = np.pad(image.astype(np.float64), ((0, 0), (top, bottom), (left, right)), mode=mode)
    k = fn(padded[:, :patch, :patch]).shape[0]
    total = np.zeros((k,) + padded.shape[1:])
    wsum = np.zeros(padded.shape[1:])
    for i in range(nr):
        for j in range(nc):
            r, s = i * stride, j * stride
            total[:, r:r + patch, s:s + patch] += window * fn(padded[:, r:r + patch, s:s + patch])
            wsum[r:r + patch, s:s + patch] += window
    return (total / wsum)[:, top:top + h, left:left + w]


# ------------------------------------------------------------- spectral indices
# Plain-NumPy twins of tiler.indices (formulas written out again, float64).

def np_index(name: str, bands: dict, valid=None, **params) -> np.ndarray:
    """NumPy twin of :func:`tiler.indices.compute_index`; ``bands`` maps band name -> array."""
    b = {k: np.asarray(v, np.float64) for k, v in bands.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        if name in ("ndvi", "ndwi", "ndmi", "mndwi", "ndre", "ndbi"):
            a, c = {"ndvi": ("nir", "red"), "ndwi": ("green", "nir"), "ndmi": ("nir", "swir1"),
                    "mndwi": ("green", "swir1"), "ndre": ("nir", "rededge1"), "ndbi": ("swir1", "nir")}[name]
            num, den, bounds = b[a] - b[c], b[a] + b[c], (-1.0, 1.0)
        elif name == "savi":
            L = params.get("L", 0.5)
            num, den, bounds = (1 + L) * (b["nir"] - b["red"]), b["nir"] + b["red"] + L, None
        elif name == "evi":
            g, c1, c2, L = (params.get(k, d) for k, d in (("g", 2.5), ("C1", 6.0), ("C2", 7.5), ("L", 1.0)))
            num, den, bounds = g * (b["nir"] - b["red"]), b["nir"] + c1 * b["red"] - c2 * b["blue"] + L, None
        elif name == "ccci":
            d1, d2 = b["nir"] + b["rededge1"], b["nir"] + b["red"]
            num, den = (b["nir"] - b["rededge1"]) / d1, (b["nir"] - b["red"]) / d2
            den = np.where((np.abs(d1) <= 1e-6) | (np.abs(d2) <= 1e-6), 0.0, den)
            bounds = None
        else:
            raise KeyError(name)
        out = np.where(np.abs(den) > 1e-6, num / den, np.nan)
    if bounds is not None:
        out = np.clip(out, *bounds)
    if valid is not None:
        out = np.where(valid, out, np.nan)
    finite = np.ones(out.shape, bool)
    for v in b.values():
        finite &= np.isfinite(v)
    return np.where(finite, out, np.nan).astype(np.float32)


#: A 3-class linear model whose argmax follows the image's colours: class maps
#: with many regions of every size, for the polygon and COG tests.
CLASSES3_W = np.asarray([[0.0, 0.0, 0.0], [1.0, -0.6, -0.3], [-0.5, -0.2, 1.1]], np.float32)
CLASSES3_B = np.asarray([0.35, 0.0, 0.0], np.float32)


def build_classes_model(path):
    """Classes ``background, building, water``: a 1x1 linear map of the normalised RGB (no domain)."""
    return _linear_model(path, CLASSES3_W, CLASSES3_B, channels=RGB, classes=("background", "building", "water"),
                         offset=[110.0] * 3, scale=[40.0] * 3)


def polygons_by_class(class_map: np.ndarray, valid: np.ndarray, classes, *, connectivity: int = 4,
                      transform=None) -> dict:
    """Oracle: ``rasterio.features.shapes`` on a whole in-memory class map, per class value.

    With 8-connectivity GDAL returns a region touching itself at a corner as one
    self-touching (invalid) ring; it is made valid (a MultiPolygon) to compare.
    """
    import rasterio.features
    import shapely
    from affine import Affine
    from shapely.geometry import shape

    out: dict = {}
    mask = valid & np.isin(class_map, list(classes))
    for geom, value in rasterio.features.shapes(class_map, mask=mask, connectivity=connectivity,
                                                transform=transform or Affine.identity()):
        g = shape(geom)
        out.setdefault(int(value), []).append(g if g.is_valid else shapely.make_valid(g))
    return out


def assert_same_polygons(expected: dict, got: dict, *, tolerance: float = 1e-6) -> None:
    """Per class: the same number of regions, each matched one to one with symmetric difference area 0."""
    assert set(expected) == set(got), (sorted(expected), sorted(got))
    for k in expected:
        a = sorted(expected[k], key=lambda g: (g.bounds, g.area))
        b = sorted(got[k], key=lambda g: (g.bounds, g.area))
        assert len(a) == len(b), f"class {k}: {len(a)} regions expected, {len(b)} written"
        for x, y in zip(a, b):
            d = x.symmetric_difference(y).area
            assert d <= tolerance * max(1.0, x.area), f"class {k}: region at {x.bounds} differs by area {d}"


def reflect_fill_candidates(patch, valid):
    """Oracle of :func:`tiler.engine.reflect_fill`: per invalid pixel ``(row, col)``, every value the definition
    allows (one per nearest valid pixel: equidistant ones are all nearest), found by a search over every valid
    pixel, each then replaced by its mirror point where that is inside and valid."""
    import numpy as np

    rows, cols = valid.shape
    vr, vc = np.nonzero(valid)
    out = {}
    for r in range(rows):
        for c in range(cols):
            if valid[r, c]:
                continue
            d = (vr - r) ** 2 + (vc - c) ** 2
            allowed = []
            for n in np.flatnonzero(d == d.min()):
                nr, nc = vr[n], vc[n]
                mr, mc = 2 * nr - r, 2 * nc - c
                inside = 0 <= mr < rows and 0 <= mc < cols and valid[mr, mc]
                allowed.append(patch[:, mr, mc] if inside else patch[:, nr, nc])
            out[r, c] = allowed
    return out
