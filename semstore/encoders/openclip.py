"""CLIP encoder backed by open_clip.

torch and open_clip are imported only when an :class:`OpenClipEncoder` is built, so
importing this module (and the CLI that does) stays fast.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semstore.encoders.base import EncoderError, EncoderWeightsNotFoundError
from semstore.encoders.configs import TINY_TEST_MODEL, register_model_configs

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = ["OpenClipEncoder", "model_image_edge"]

logger = logging.getLogger(__name__)

# Seed of the random initialisation used when no weights are loaded: every process that
# builds the same architecture without weights gets the same model, hence the same codes.
RANDOM_INIT_SEED = 0

_SCHEMA_PREFIXES = ("hf-hub:", "local-dir:")
_CHECKPOINT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".npz", ".ckpt")
_LIST_MODELS_HINT = "python -c 'import open_clip; print(open_clip.list_models())'"


class OpenClipEncoder:
    """An :class:`~semstore.encoders.Encoder` running an open_clip model.

    Args:
        model: open_clip architecture name (``open_clip.list_models()``, plus
            :data:`TINY_TEST_MODEL`), or an ``hf-hub:``/``local-dir:`` model reference.
        pretrained: open_clip pretrained tag (weights from the Hugging Face hub cache; set
            ``HF_HUB_OFFLINE=1`` to never touch the network), a local checkpoint file path,
            or ``None`` for seeded random weights. Ignored for :data:`TINY_TEST_MODEL`
            unless it is an existing file, since that model has no published weights.
        checkpoint_path: local checkpoint file; takes precedence over ``pretrained``.
        device: torch device to run on.
        threads: torch intra-op threads (process-wide ``torch.set_num_threads``); ``None``
            keeps torch's choice.
        batch_size: items per forward pass.

    Raises:
        ValueError: unknown model name or pretrained tag, or a non-positive setting.
        EncoderWeightsNotFoundError: the weights are neither cached nor downloadable,
            or the checkpoint file does not exist.
        EncoderError: the checkpoint file exists but does not load into this model.
    """

    def __init__(
        self,
        model: str = "ViT-B-32",
        pretrained: str | None = "laion2b_s34b_b79k",
        *,
        checkpoint_path: str | Path | None = None,
        device: str = "cpu",
        threads: int | None = None,
        batch_size: int = 32,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be positive, got {threads}")

        import open_clip
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        register_model_configs()
        _check_model_name(model)
        weights, weights_label = _resolve_weights(model, pretrained, checkpoint_path)

        # Seed a forked RNG so random weights are reproducible without disturbing the caller's RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            try:
                with _random_init_said_once(model, weights):
                    clip, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=weights, device=device)
            except Exception as exc:
                if weights is not None and Path(weights).is_file():
                    # Whatever torch says (bad pickle, missing keys, wrong shapes), the file is the problem.
                    raise EncoderError(
                        f"checkpoint {weights} could not be loaded into open_clip model {model!r}: {_first_line(exc)}"
                    ) from exc
                if model.startswith("hf-hub:") and isinstance(exc, (RuntimeError, OSError)):
                    raise EncoderWeightsNotFoundError(_weights_help(model, None, _first_line(exc))) from exc
                raise
        clip.eval()

        self._model: Any = clip
        self._preprocess: Any = preprocess
        self._tokenizer: Any = open_clip.get_tokenizer(model)
        self._device = torch.device(device)
        self._batch_size = batch_size
        self._name = model if _has_schema(model) else f"{model}/{weights_label}"
        self._is_semantic = model != TINY_TEST_MODEL and (weights is not None or _has_schema(model))
        self._dim = self._probe_dim()
        self._image_edge = _input_edge(clip)

    @property
    def name(self) -> str:
        """``"<model>/<tag>"``, ``"<model>/<checkpoint file name>"`` or ``"<model>/random"``."""
        return self._name

    @property
    def dim(self) -> int:
        """Embedding width of the model."""
        return self._dim

    @property
    def is_semantic(self) -> bool:
        """True only when real weights are loaded into a real architecture."""
        return self._is_semantic

    @property
    def image_edge(self) -> int | None:
        """Smallest side of the model's input images; larger images may be decoded smaller."""
        return self._image_edge

    @property
    def batch_size(self) -> int:
        """Items per forward pass."""
        return self._batch_size

    @property
    def torch_model(self) -> torch.nn.Module:
        """The underlying open_clip model (in eval mode), e.g. to save its ``state_dict``."""
        return self._model

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed PIL images with the model's own preprocessing; float32 ``(n, dim)``, unit rows."""
        import torch

        chunks = []
        for start in range(0, len(images), self._batch_size):
            batch = images[start : start + self._batch_size]
            pixels = torch.stack([self._preprocess(image) for image in batch]).to(self._device)
            with torch.inference_mode():
                chunks.append(_unit_rows(self._model.encode_image(pixels)))
        return self._concat(chunks)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts with the model's own tokenizer; float32 ``(n, dim)``, unit rows."""
        import torch

        if isinstance(texts, str):
            raise TypeError("encode_texts takes a sequence of strings, not a single string")
        chunks = []
        for start in range(0, len(texts), self._batch_size):
            tokens = self._tokenizer(list(texts[start : start + self._batch_size])).to(self._device)
            with torch.inference_mode():
                chunks.append(_unit_rows(self._model.encode_text(tokens)))
        return self._concat(chunks)

    def __repr__(self) -> str:
        return f"OpenClipEncoder(name={self._name!r}, dim={self._dim}, device={str(self._device)!r})"

    def _probe_dim(self) -> int:
        output_dim = getattr(getattr(self._model, "visual", None), "output_dim", None)
        if isinstance(output_dim, int) and output_dim > 0:
            return output_dim
        # Towers without that attribute (e.g. some timm/hf ones): measure the real output.
        self._dim = 0
        return int(self.encode_texts([""]).shape[1])

    def _concat(self, chunks: list[np.ndarray]) -> np.ndarray:
        if not chunks:
            return np.zeros((0, self._dim), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)


def _input_edge(clip: Any) -> int | None:
    import open_clip

    size = open_clip.get_model_preprocess_cfg(clip).get("size")
    if isinstance(size, int):
        return size if size > 0 else None
    if isinstance(size, (tuple, list)) and size and all(isinstance(v, int) and v > 0 for v in size):
        return min(size)
    return None


def model_image_edge(model: str) -> int | None:
    """The input image side of open_clip architecture ``model`` from its config (no weights loaded)."""
    import open_clip

    register_model_configs()
    config = open_clip.get_model_config(model) or {}
    size = config.get("vision_cfg", {}).get("image_size")
    if isinstance(size, int):
        return size
    if isinstance(size, (tuple, list)) and size:
        return min(int(v) for v in size)
    return None


def _unit_rows(features: torch.Tensor) -> np.ndarray:
    import torch.nn.functional as F

    # Normalise in float32 even when the model runs in lower precision.
    return F.normalize(features.float(), dim=-1).cpu().numpy()


def _has_schema(model: str) -> bool:
    return model.startswith(_SCHEMA_PREFIXES)


def _check_model_name(model: str) -> None:
    import open_clip

    if _has_schema(model):
        return
    available = open_clip.list_models()
    if model.replace("/", "-") in available:
        return
    close = difflib.get_close_matches(model, available, n=3)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise ValueError(
        f"unknown open_clip model {model!r}{hint}; list the available models with `{_LIST_MODELS_HINT}` "
        f"(semstore adds {TINY_TEST_MODEL!r}, a tiny non-semantic model for tests)"
    )


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or value.startswith("~") or value.lower().endswith(_CHECKPOINT_SUFFIXES)


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextmanager
def _random_init_said_once(model: str, weights: str | None) -> Iterator[None]:
    """open_clip warns on the root logger every time a model gets random weights, i.e. on every
    command with the tiny test model: nothing a user can act on. Random weights on a real
    architecture are worth one line (from semstore's logger), the tiny model's none."""
    if weights is not None:
        yield
        return
    if model != TINY_TEST_MODEL:
        logger.warning("open_clip model %r has random weights (no pretrained tag or checkpoint): its embeddings mean nothing", model)
    root, dropped = logging.getLogger(), _DropRandomInitWarning()
    root.addFilter(dropped)
    try:
        yield
    finally:
        root.removeFilter(dropped)


def _resolve_weights(model: str, pretrained: str | None, checkpoint_path: str | Path | None) -> tuple[str | None, str]:
    """The ``pretrained`` argument for open_clip, and a label naming the weights.

    Tags are fetched here first (a no-op when cached) so that a missing download becomes an
    :class:`EncoderWeightsNotFoundError` instead of open_clip's generic RuntimeError.
    """
    import open_clip

    if checkpoint_path is not None:
        path = Path(checkpoint_path).expanduser()
        if not path.is_file():
            raise EncoderWeightsNotFoundError(_weights_help(model, str(path), f"checkpoint file not found: {path}"))
        return str(path), path.name
    if _has_schema(model) or not pretrained:
        return None, "random"
    path = Path(pretrained).expanduser()
    if path.is_file():
        return str(path), path.name
    if _looks_like_path(pretrained):
        raise EncoderWeightsNotFoundError(_weights_help(model, pretrained, f"checkpoint file not found: {path}"))
    if model == TINY_TEST_MODEL:
        return None, "random"

    tag_cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise ValueError(
            f"unknown pretrained tag {pretrained!r} for model {model!r}; "
            f"known tags: {', '.join(tags) if tags else 'none'} (or give a local checkpoint file path)"
        )
    try:
        downloaded = open_clip.download_pretrained(tag_cfg)
    except Exception as exc:  # noqa: BLE001 - hub, HTTP and OS errors all mean "not available"
        raise EncoderWeightsNotFoundError(_weights_help(model, pretrained, _first_line(exc), tag_cfg)) from exc
    if not downloaded:
        raise EncoderWeightsNotFoundError(_weights_help(model, pretrained, "no download source for this tag", tag_cfg))
    return pretrained, pretrained


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants
    except ImportError:
        return "~/.cache/huggingface/hub"
    return str(constants.HF_HUB_CACHE)


def _weights_help(model: str, pretrained: str | None, cause: str, tag_cfg: dict[str, Any] | None = None) -> str:
    repo = (tag_cfg or {}).get("hf_hub", "").rstrip("/")
    source = f" (Hugging Face repo {repo})" if repo else ""
    weights = f" with pretrained={pretrained!r}" if pretrained else ""
    return (
        f"weights for open_clip model {model!r}{weights} could not be found or downloaded: {cause}\n"
        "Provide them in one of these ways:\n"
        f"  1. Download them once on a machine with network access{source}; they are cached in "
        f"{_hf_cache_dir()} (set HF_HOME or HF_HUB_CACHE to use another cache). Copy that cache here "
        "and set HF_HUB_OFFLINE=1 so nothing is fetched from the network.\n"
        "  2. Use a local checkpoint file: SEMSTORE_PRETRAINED=/path/to/checkpoint.bin, "
        "or --pretrained PATH on the command line.\n"
        f"  3. For tests and offline mechanics only, use the tiny NON-semantic model: "
        f"SEMSTORE_MODEL={TINY_TEST_MODEL} (or --model {TINY_TEST_MODEL}); its random embeddings mean nothing."
    )
