"""FAISS ADC search over a PQ-VAE codec's codes (FAISS is used only in this package).

Public API: :class:`ADCIndex` (add / remove / search / codes_for / save / load /
load_or_build), :class:`IVFADCIndex` (an optional, build-only IVF partition of the same codes
for sub-linear search), :class:`IndexVersion`, and the load errors :class:`IndexLoadError` with its
subclasses :class:`IndexNotFoundError`, :class:`IndexStaleError`, :class:`IndexCorruptError`.
"""

from semstore.index.adc import ADCIndex
from semstore.index.errors import IndexCorruptError, IndexLoadError, IndexNotFoundError, IndexStaleError
from semstore.index.ivf import IVFADCIndex
from semstore.index.persistence import IndexVersion

__all__ = [
    "ADCIndex",
    "IndexCorruptError",
    "IndexLoadError",
    "IndexNotFoundError",
    "IndexStaleError",
    "IndexVersion",
    "IVFADCIndex",
]
