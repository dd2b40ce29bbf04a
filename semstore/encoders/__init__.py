"""Encoders: images and texts to unit-norm float32 embeddings.

Public API: :class:`Encoder` (the interface), :class:`OpenClipEncoder` (open_clip backend),
:data:`TINY_TEST_MODEL` (a tiny, NON-semantic model for tests and offline mechanics),
:func:`load_encoder` (build the encoder described by :class:`~semstore.config.Settings`),
:class:`ModelPolicy` (which models a server's clients may ask for) and the errors. Importing this package does not import torch or open_clip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from semstore.encoders.base import Encoder, EncoderError, EncoderWeightsNotFoundError
from semstore.encoders.configs import TINY_TEST_MODEL, register_model_configs
from semstore.encoders.openclip import OpenClipEncoder
from semstore.encoders.policy import ModelNotAllowedError, ModelPolicy

if TYPE_CHECKING:
    from semstore.config import Settings

__all__ = [
    "TINY_TEST_MODEL",
    "Encoder",
    "EncoderError",
    "EncoderWeightsNotFoundError",
    "ModelNotAllowedError",
    "ModelPolicy",
    "OpenClipEncoder",
    "build_encoder",
    "load_encoder",
    "register_model_configs",
]


def build_encoder(
    model: str, pretrained: str | None, *, device: str = "cpu", threads: int | None = None, batch_size: int = 32
) -> Encoder:
    """The open_clip encoder for ``model`` / ``pretrained``: the one place encoders are built
    (a :class:`~semstore.Database`'s default, a Ray ingest actor's, :func:`load_encoder`)."""
    return OpenClipEncoder(model, pretrained, device=device, threads=threads, batch_size=batch_size)


def load_encoder(settings: Settings) -> Encoder:
    """Build the encoder named by ``settings.model`` / ``settings.pretrained``.

    ``settings.pretrained`` may be an open_clip tag or a local checkpoint path; for
    :data:`TINY_TEST_MODEL` a tag is ignored (it has none) and random seeded weights are used.

    Raises:
        ValueError: unknown model or tag.
        EncoderWeightsNotFoundError: the weights are not available offline.
    """
    return build_encoder(
        settings.model, settings.pretrained, device=settings.device, threads=settings.threads, batch_size=settings.batch_size
    )
