"""Scenes: one raster, a scene manifest, a local STAC Item, or a sensor folder of band groups.

See :func:`open_scene`. Band groups at other resolutions are read through a
resampling onto the reference grid; :mod:`tiler.registration` estimates their
misalignment.
"""

from typing import TYPE_CHECKING

from tiler._lazy import lazy_exports

# Loaded on first use (rasterio with them): the command line checks scene paths with
# scene_inputs/split_scene before anything reads a raster.
_EXPORTS = {
    "scene_inputs": "_paths",
    "split_scene": "_stac", "read_stac_item": "_stac", "stac_items": "_stac",
    "Scene": "_scene", "open_scene": "_scene", "BandMapping": "_geometry", "GroupGrid": "_geometry",
    "check_bounds": "_geometry",
    "Band": "_bands", "BandGroup": "_bands", "SPECTRAL_RANGES": "_bands", "RESAMPLING_UP": "_bands",
    "RESAMPLING_DOWN": "_bands",
    "Layout": "_layouts", "detect_layout": "_layouts", "SENTINEL2_BANDS": "_layouts", "LANDSAT_BANDS": "_layouts",
    "WORLDVIEW3_BANDS": "_layouts",
    "read_manifest": "_manifest",
    "CloudMask": "_cloudmask", "CLOUD_MASK_KINDS": "_cloudmask",
    "ProcessingGrid": "_grid", "AxisMap": "_grid", "processing_grid": "_grid", "RESAMPLE_TOLERANCE": "_grid",
    "RESAMPLE_MODES": "_grid", "OUTPUT_GRIDS": "_grid",
}
_, __getattr__, __dir__ = lazy_exports("tiler.scene", _EXPORTS)

__all__ = [
    "scene_inputs",
    "split_scene",
    "Scene", "open_scene", "BandMapping", "GroupGrid", "check_bounds", "Band", "BandGroup", "Layout",
    "detect_layout", "read_manifest", "read_stac_item", "stac_items", "SPECTRAL_RANGES", "RESAMPLING_UP",
    "RESAMPLING_DOWN",
    "SENTINEL2_BANDS", "LANDSAT_BANDS", "WORLDVIEW3_BANDS", "CloudMask", "CLOUD_MASK_KINDS",
    "ProcessingGrid", "AxisMap", "processing_grid", "RESAMPLE_TOLERANCE", "RESAMPLE_MODES", "OUTPUT_GRIDS",
]

if TYPE_CHECKING:  # the names as static analysers and the API reference see them
    from tiler.scene._bands import RESAMPLING_DOWN, RESAMPLING_UP, SPECTRAL_RANGES, Band, BandGroup
    from tiler.scene._cloudmask import CLOUD_MASK_KINDS, CloudMask
    from tiler.scene._geometry import BandMapping, GroupGrid, check_bounds
    from tiler.scene._grid import (
        OUTPUT_GRIDS,
        RESAMPLE_MODES,
        RESAMPLE_TOLERANCE,
        AxisMap,
        ProcessingGrid,
        processing_grid,
    )
    from tiler.scene._layouts import LANDSAT_BANDS, SENTINEL2_BANDS, WORLDVIEW3_BANDS, Layout, detect_layout
    from tiler.scene._manifest import read_manifest
    from tiler.scene._paths import scene_inputs
    from tiler.scene._scene import Scene, open_scene
    from tiler.scene._stac import read_stac_item, split_scene, stac_items
