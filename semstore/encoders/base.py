"""The encoder interface every embedding backend implements, and its errors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


@runtime_checkable
class Encoder(Protocol):
    """Maps images and texts into one shared embedding space.

    Both ``encode_*`` methods batch internally and return a ``float32`` array of shape
    ``(n, dim)`` whose rows have unit L2 norm, so a dot product is a cosine similarity.
    """

    @property
    def name(self) -> str:
        """Model and weights, e.g. ``"ViT-B-32/laion2b_s34b_b79k"``; recorded with stored codes."""
        ...

    @property
    def dim(self) -> int:
        """Embedding width."""
        ...

    @property
    def is_semantic(self) -> bool:
        """False for encoders whose embeddings carry no meaning (random weights, test models)."""
        ...

    @property
    def image_edge(self) -> int | None:
        """Smallest image side the model's preprocessing needs (``None``: full size).

        Decoders may shrink larger images down to it (JPEG DCT scaling) without changing
        what the model sees materially, at a fraction of the memory.
        """
        ...

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed images; returns float32 ``(len(images), dim)`` with unit-norm rows."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts; returns float32 ``(len(texts), dim)`` with unit-norm rows."""
        ...


class EncoderError(RuntimeError):
    """Base class of encoder failures."""


class EncoderWeightsNotFoundError(EncoderError):
    """The weights of a model could not be found locally nor downloaded.

    The message says how to provide them (Hugging Face cache, local checkpoint, tiny test model).
    """
