"""The PQ-VAE codec with one shared codebook: embeddings <-> short integer codes.

Public API: :class:`PQVAECodec`, its :class:`CodecConfig` and :class:`FitReport`.
"""

from semstore.codec.config import CodecConfig
from semstore.codec.model import CodecNotFittedError, PQVAECodec
from semstore.codec.training import FitReport

__all__ = ["CodecConfig", "CodecNotFittedError", "FitReport", "PQVAECodec"]
