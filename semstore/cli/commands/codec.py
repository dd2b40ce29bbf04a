"""The train-codec command: fit a PQ-VAE codec on saved embeddings, to share between collections."""

from pathlib import Path
from typing import Annotated

import typer

from semstore.cli.errors import CliError
from semstore.cli.params import build_settings


def train_codec(
    embeddings: Annotated[Path, typer.Argument(help="A .npy float matrix (n, dim) of embeddings.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to save the codec (.safetensors).")],
    subvectors: Annotated[
        int | None, typer.Option("--subvectors", min=1, help="Codes per vector (default: from settings, 16).")
    ] = None,
    codebook_size: Annotated[
        int | None, typer.Option("--codebook-size", min=2, max=65536, help="Shared codebook entries (default: from settings, 256).")
    ] = None,
    beam: Annotated[
        int | None,
        typer.Option("--beam", min=1, max=256, help="Encoding beam width (default: from settings, 12; 8 encodes about 1.3x and 4 about 1.7x faster, slightly lossier; 16 about 1.15x slower)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (training is deterministic per seed).")] = 0,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Hide the progress bar.")] = False,
) -> None:
    """Fit a codec on embeddings and save it; reuse it with `init --codec` / `ingest --codec`."""
    import numpy as np

    from semstore.codec import PQVAECodec

    settings = build_settings()
    try:
        matrix = np.load(embeddings, allow_pickle=False)
    except ValueError as exc:
        raise CliError(f"cannot read {embeddings} as a .npy array: {exc}") from exc
    if not isinstance(matrix, np.ndarray) or matrix.ndim != 2:
        shape = getattr(matrix, "shape", "an .npz archive")
        raise CliError(f"{embeddings} must hold a 2-D matrix (n, dim), got {shape}")
    codec = PQVAECodec(
        dim=int(matrix.shape[1]),
        num_subvectors=subvectors or settings.codec_num_subvectors,
        codebook_size=codebook_size or settings.codec_codebook_size,
        beam_size=beam or settings.codec_beam_size,
    )
    codec.fit(matrix, seed=seed, progress=not no_progress)
    path = codec.save(output)
    if codec.report is not None:
        typer.echo(codec.report.summary())
    typer.echo(
        f"saved codec {codec.content_hash[:12]} to {path}: {codec.num_subvectors} codes x "
        f"{codec.bits_per_vector / codec.num_subvectors:g} bits = {codec.bits_per_vector:g} bits "
        f"({codec.bytes_per_vector} bytes) per {codec.dim}-d vector"
    )
