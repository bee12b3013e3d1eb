"""Spectral index channels (NDVI, NDWI, NDMI, MNDWI, SAVI, EVI, NDRE, CCCI, NDBI).

:data:`INDICES` is the registry, :func:`compute_index` the entry point; a
model's channel list may name indices as well as bands, and
:class:`ChannelPlan` builds them from a scene's bands.
"""

from tiler.indices._channels import ChannelPlan
from tiler.indices._formulas import DENOMINATOR_EPSILON, INDICES, SpectralIndex, compute_index, get_index

__all__ = ["INDICES", "SpectralIndex", "compute_index", "get_index", "DENOMINATOR_EPSILON", "ChannelPlan"]
