"""Typed settings for semstore, read from ``SEMSTORE_*`` environment variables.

Settings are built on demand with :func:`get_settings` (never at import time), so tests
and embedding applications can pass their own :class:`Settings` instance anywhere a
component needs configuration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from semstore.names import child_folder


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "semstore"


class Settings(BaseSettings):
    """All configuration of the library, the CLI and the server in one typed object."""

    model_config = SettingsConfigDict(env_prefix="SEMSTORE_", env_file=None, extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir, description="Where the default SQLite database and saved indexes live.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default: sqlite:///<data_dir>/semstore.db")

    model: str = Field(default="ViT-B-32", description="open_clip model name.")
    pretrained: str | None = Field(default="laion2b_s34b_b79k", description="open_clip pretrained tag, or a local checkpoint path.")
    device: str = Field(default="cpu", description="torch device for the encoder.")
    threads: int | None = Field(default=None, description="torch intra-op threads (default: torch's choice).")
    switch_interval_ms: float = Field(
        default=0.5, gt=0, le=100,
        description="The server's Python thread switch interval (sys.setswitchinterval; Python's default is 5 ms). "
        "Shorter gives a search thread the interpreter back sooner while uploads run Python code beside it.",
    )  # fmt: skip
    batch_size: int = Field(default=32, ge=1, description="Images per encoder batch.")

    codec_bootstrap_size: int = Field(
        default=20_000, ge=2,
        description=(
            "Embeddings buffered (in memory only) to train a new collection's codec; nothing is stored before it is "
            "trained. 20,000 is the default: on real MiniLM embeddings (WordNet, 128 bits) the codec trained on "
            "20,000 instead of 5,000 vectors scored 0.578 / 0.288 / 0.517 instead of 0.548 / 0.278 / 0.507 "
            "(re-ranked 10-recall@10, paired R@1, R@10; bench/RESULTS.md, issue #18). Fewer: a faster first result."
        ),
    )  # fmt: skip
    codec_num_subvectors: int = Field(default=16, ge=1)
    codec_codebook_size: int = Field(default=256, ge=2, le=65536)
    codec_beam_size: int = Field(
        default=12, ge=1, le=256,
        description=(
            "Beam of a new codec's encoding search. 12 is the default: on MiniLM at 128 bits it scored "
            "the same retrieval metrics as 16 to within noise and encoded 1.25x faster; 8 is 1.3x faster "
            "again for 0.002 less 10-recall@10 and 0.004 less paired R@10 (bench/RESULTS.md)."
        ),
    )

    codec_neural_decoder: bool = Field(
        default=False,
        description=(
            "Train a neural re-rank decoder with a new collection's codec (semstore.codec.neural): same codes, "
            "same ADC shortlist, the shortlist re-ordered by a small MLP over the codes; kept only if it beats the "
            "linear decoder on held-out vectors. Off by default: on real MiniLM embeddings with 5,000-50,000 "
            "training vectors it never did (bench/RESULTS.md, issue #18), and it costs ~20 us per re-ranked candidate."
        ),
    )

    max_image_pixels: int = Field(default=89_478_485, ge=1, description="Images above this many pixels are rejected (decompression bombs).")
    max_decode_pixels: int = Field(
        default=2 * 89_478_485,
        ge=1,
        description=(
            "Pixels the process decodes at full size at once, over all threads (a larger image waits for the "
            "others). JPEGs decode at a reduced scale when the model needs fewer pixels, which counts less."
        ),
    )
    max_loaded_encoders: int = Field(default=2, ge=1, description="Encoders (CLIP models) kept loaded; the least recently used is released.")

    # -- index ---------------------------------------------------------------------------------
    index_kind: Literal["auto", "exhaustive", "ivf"] = Field(
        default="auto",
        description=(
            "The in-memory index: 'exhaustive' ADC, 'ivf' (inverted lists; codebooks above 16 codewords), or 'auto': "
            "IVF from ivf_min_items items on (back to exhaustive below half of that)."
        ),
    )
    ivf_min_items: int = Field(default=1_000_000, ge=1, description="With index_kind auto, collections this large use the IVF index.")
    ivf_nlist: int | None = Field(default=None, ge=1, description="Lists of a new IVF index (default: about sqrt of the item count).")
    ivf_nprobe: int = Field(default=32, ge=1, description="Lists an IVF search scans (more: higher recall, slower).")
    metadata_in_memory: bool = Field(
        default=True,
        description="Hold the items' filterable metadata in memory beside the index (filters then need no SQL).",
    )
    metadata_max_distinct: int = Field(
        default=65_536, ge=1,
        description="Keys with more distinct values than this stay in the database only (filters on them use SQL).",
    )  # fmt: skip

    # -- HTTP server -------------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Interface the HTTP server listens on.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port of the HTTP server.")
    api_keys_disabled: bool = Field(
        default=False,
        description="Serve without API keys (local use only: refused unless the host is a loopback address).",
    )
    max_upload_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1,
        description="Largest body of an image upload or image search (413 above); also the most bytes read of a stored original.",
    )
    max_import_bytes: int = Field(default=1024 * 1024 * 1024, ge=1, description="Largest collection archive POST /v1/collections/import accepts.")
    max_json_bytes: int = Field(default=1024 * 1024, ge=1, description="Largest body of every other request (JSON).")
    max_images_per_request: int = Field(default=64, ge=1, description="Most images in one upload request.")
    max_request_pixels: int = Field(
        default=512_000_000, ge=1,
        description="Most pixels (as decoded, see max_decode_pixels) the images of one upload request may hold together (413 above).",
    )
    max_filter_keys: int = Field(default=32, ge=1, description="Most keys a metadata filter (where) may have.")
    shards: int = Field(
        default=1, ge=1,
        description="Search through this many shard deployments on Ray Serve (1: the server's own index; needs ray_address or a running Ray).",
    )
    shard_replicas: int = Field(default=1, ge=1, description="Replicas of each shard deployment (with shards > 1).")
    shard_timeout_seconds: float = Field(
        default=5.0, gt=0, description="How long a sharded search waits for the shards; later ones are left out and the answer is flagged partial."
    )
    ray_address: str | None = Field(
        default=None, description="Ray cluster for sharded search ('auto', 'host:6379', 'ray://host:10001'); None: RAY_ADDRESS or a local Ray."
    )
    header_timeout_seconds: float = Field(default=10.0, gt=0, description="A client must send a request's headers within this time.")
    body_timeout_seconds: float = Field(
        default=30.0, gt=0, description="A client must send each part of a request body within this time of the previous one."
    )
    auth_failures_per_minute: int = Field(
        default=30, ge=0, description="Requests with a missing, malformed or unknown key allowed per client address a minute (0: unlimited)."
    )
    allowed_models: list[str] = Field(
        default_factory=list,
        description=(
            "open_clip models clients may create collections with, as 'model' or 'model/pretrained-tag'; "
            "the default model is always allowed."
        ),
    )
    allow_test_model: bool = Field(default=False, description="Let clients create collections with the tiny non-semantic test model.")
    max_page_size: int = Field(default=1000, ge=1, description="Largest k / page size a request may ask for.")
    rate_limit_per_minute: int = Field(default=600, ge=0, description="Requests per minute per API key (0: unlimited).")
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS (none by default).")
    allowed_ingest_roots: list[Path] = Field(
        default_factory=list, description="Folders whose images the server may ingest by path (none by default)."
    )
    source_roots: list[Path] = Field(
        default_factory=list,
        description=(
            "Folders the server may read stored items' original files from (thumbnails), besides its own "
            "uploads and allowed_ingest_roots; e.g. the folders ingested with the CLI."
        ),
    )
    inference_concurrency: int = Field(default=2, ge=1, description="Encoder/ingest jobs the server runs at once.")
    ingest_processes: int = Field(
        default=1, ge=0,
        description=(
            "Worker processes (niced, started with the server) that run the server's uploads and path ingests, "
            "so that their Python work (decode, encoder, codec, SQL) never holds the GIL of the process answering "
            "searches. Each loads its own encoder (memory: one model per process); several may write one collection "
            "at once, as replicas do. 0: run ingests on low-priority threads of the server process. A server given an "
            "encoder_factory that cannot be pickled (e.g. a lambda) uses the threads."
        ),
    )  # fmt: skip
    index_poll_seconds: float = Field(
        default=2.0, ge=0, description="How often the server applies other replicas' writes to its indexes (0: only on request)."
    )

    @field_validator("pretrained", mode="before")
    @classmethod
    def _empty_pretrained_is_none(cls, value: object) -> object:
        # SEMSTORE_PRETRAINED= (empty) is how an environment says "no pretrained weights"
        return None if value == "" else value

    def as_environment(self) -> dict[str, str]:
        """``SEMSTORE_*`` variables from which a new process (a server, a worker) reads these
        same settings; lists as JSON, a ``pretrained`` of None as the empty string."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                if name == "pretrained":
                    env["SEMSTORE_PRETRAINED"] = ""
                continue
            env[f"SEMSTORE_{name.upper()}"] = json.dumps([str(v) for v in value]) if isinstance(value, list) else str(value)
        return env

    def resolved_database_url(self) -> str:
        """The database URL to use: the explicit one, or a SQLite file in ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir.expanduser() / 'semstore.db'}"

    def upload_directory(self, collection: str) -> Path:
        """Where the kept originals of a collection's uploads live (for thumbnails).

        Raises :class:`semstore.names.UnsafePathError` for a name that is no safe folder
        name (``..``, ``a/b``: possible only for collections stored before names were checked).
        """
        return child_folder(self.data_dir.expanduser() / "uploads", collection)

    def readable_source_roots(self) -> list[Path]:
        """Folders whose files the server may read as item originals (ingest roots and source roots)."""
        return [*self.allowed_ingest_roots, *self.source_roots]


def get_settings(**overrides: object) -> Settings:
    """Build settings from the environment, with keyword overrides taking precedence."""
    return Settings(**overrides)  # type: ignore[arg-type]
