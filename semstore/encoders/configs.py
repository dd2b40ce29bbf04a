"""Model architecture configs shipped with semstore, registered with open_clip on demand.

``semstore-tiny-test`` is a deliberately tiny CLIP (64-d embeddings, 2-layer towers, 32 px
input) that is only ever built with seeded random weights. It is NOT semantic: its
embeddings mean nothing. It exists so tests and offline runs exercise the real open_clip
code path (config, preprocess, tokenizer, batching) without downloading weights.
"""

from __future__ import annotations

from pathlib import Path

#: Name of the tiny, non-semantic test model (random weights; for tests and offline mechanics only).
TINY_TEST_MODEL = "semstore-tiny-test"

#: Directory of the open_clip JSON configs shipped with semstore.
MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"


def register_model_configs() -> None:
    """Add semstore's model configs to open_clip's registry (idempotent; imports open_clip)."""
    import open_clip

    known = set(open_clip.list_models())
    if all(path.stem in known for path in MODEL_CONFIG_DIR.glob("*.json")):
        return
    open_clip.add_model_config(MODEL_CONFIG_DIR)
