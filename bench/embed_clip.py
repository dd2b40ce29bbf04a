"""Embed an image-caption data set with a real CLIP model into one ``.npz`` for the codec benchmark.

The output feeds ``python bench/codec_quality.py --dataset npz --embeddings FILE`` (read by
``bench.datasets.load_npz_embeddings``): images are the compressed documents, each image's
caption is its paired text query (text -> image retrieval), and the class prompts
"a photo of a {class}" give zero-shot classification.

Input: a folder of images and a CSV file (default ``FOLDER/captions.csv``, UTF-8) with a
header and at least the columns ``file,caption,label``:

* ``file``: image path relative to the folder (or absolute), one row per image;
* ``caption``: the text that describes this image;
* ``label``: its class name (classes are the sorted distinct labels).

Output ``.npz`` (written atomically):

* ``images`` (n, D) float32, L2-normalised image embeddings, in CSV row order;
* ``captions`` (n, D) float32, L2-normalised text embeddings of each row's caption;
* ``labels`` (n,) int64 class ids, indexes into ``class_names``;
* ``class_names`` (C,) str, sorted;
* ``class_prompts`` (C, D) float32 text embeddings of the prompt template per class;
* ``meta``: a JSON string (model, pretrained, encoder name, is_semantic, dim, n, date, ...).

The encoder is semstore's own :class:`semstore.encoders.OpenClipEncoder`, so the
embeddings are exactly those semstore stores. Images are decoded with semstore's ingest
decoder (EXIF orientation, RGB, transparency on white).

Public data sets that convert to this format (not downloaded by this script):

* **COCO Captions** (train2017 or val2017 images + ``annotations/captions_*.json``, and
  ``instances_*.json`` for labels): keep one caption per image (e.g. the first), and take
  as label the category with the largest total box area in the image (e.g. "dog",
  "pizza"; 80 classes). val2017 has 5k images, so use train2017 images for a 20k/5k split.
* **Imagenette** (fast.ai, the 10-class ImageNet subset, ~13.4k images; or Imagewoof):
  the class folder gives the label ("tench", "English springer", "cassette player",
  ...); write ``file`` = the relative path (e.g. ``train/n01440364/xxx.JPEG``) and
  ``caption`` = a caption per image if you have one, else a class-name sentence such as
  "a photo of a tench" (then the paired task measures class retrieval, not instance
  retrieval: say so when reporting).

Usage::

    HF_HUB_OFFLINE=1 python bench/embed_clip.py --images DIR --out clip.npz \\
        --model ViT-B-32 --pretrained laion2b_s34b_b79k
    python bench/embed_clip.py --images DIR --out clip.npz --model ViT-B-32 \\
        --pretrained /path/to/open_clip_checkpoint.bin
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: import this folder as the ``bench`` package. The script folder is
    # dropped from sys.path so bench/datasets.py cannot shadow the ``datasets`` library.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from semstore.encoders import Encoder, EncoderError, OpenClipEncoder  # noqa: E402
from semstore.ingest.images import BadImageError, open_image  # noqa: E402

REQUIRED_COLUMNS = ("file", "caption", "label")
DEFAULT_PROMPT = "a photo of a {}"
MAX_PIXELS = 89_478_485  # semstore's default ingest limit (Settings.max_image_pixels)
_LISTED_PROBLEMS = 5  # how many missing files / bad rows an error message names


class EmbedError(ValueError):
    """A user error (unusable CSV or image, unknown model or tag); the message says what to fix."""


@dataclass(frozen=True)
class CaptionRow:
    """One CSV row: the image file, its caption and its class name."""

    path: Path
    caption: str
    label: str


def _listing(items: Sequence[str], total: int) -> str:
    shown = ", ".join(items[:_LISTED_PROBLEMS])
    return shown + (f", ... ({total} in all)" if total > _LISTED_PROBLEMS else "")


def read_captions(csv_path: Path, image_dir: Path) -> list[CaptionRow]:
    """Read and check ``csv_path``: required columns, non-empty fields, unique existing files.

    Raises:
        EmbedError: the CSV is missing, unreadable, lacks a column, has an empty
            field or a repeated file, or names image files that do not exist.
    """
    if not csv_path.is_file():
        raise EmbedError(f"captions file not found: {csv_path}")
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark.
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [name.strip() for name in reader.fieldnames or []]
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise EmbedError(
                    f"{csv_path}: missing column(s) {', '.join(missing)}; the header must contain "
                    f"{','.join(REQUIRED_COLUMNS)} (found: {','.join(header) or 'no header'})"
                )
            reader.fieldnames = header
            raw = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EmbedError(f"{csv_path}: cannot be read as a UTF-8 CSV file: {exc}") from exc

    rows: list[CaptionRow] = []
    seen: dict[str, int] = {}
    for line, row in raw:
        values = {c: (row.get(c) or "").strip() for c in REQUIRED_COLUMNS}
        empty = [c for c in REQUIRED_COLUMNS if not values[c]]
        if empty:
            raise EmbedError(f"{csv_path}, line {line}: empty {', '.join(empty)}")
        if values["file"] in seen:
            raise EmbedError(
                f"{csv_path}, line {line}: file {values['file']!r} is repeated (first on line "
                f"{seen[values['file']]}); keep one caption per image so each query has one correct image"
            )
        seen[values["file"]] = line
        rows.append(CaptionRow(image_dir / values["file"], values["caption"], values["label"]))
    if not rows:
        raise EmbedError(f"{csv_path}: no rows after the header")
    absent = [str(r.path) for r in rows if not r.path.is_file()]
    if absent:
        raise EmbedError(f"{len(absent)} image file(s) listed in {csv_path} not found: {_listing(absent, len(absent))}")
    return rows


def _batches(rows: Sequence[CaptionRow], size: int) -> Iterator[Sequence[CaptionRow]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def embed_images(
    encoder: Encoder, rows: Sequence[CaptionRow], batch_size: int, *, skip_bad: bool, progress: bool = True
) -> tuple[np.ndarray, list[int], list[str]]:
    """Image embeddings of the rows that decode, the indexes of those rows, and the skipped files.

    Decoding and encoding go batch by batch so memory stays bounded by one batch of images.

    Raises:
        EmbedError: an image does not decode and ``skip_bad`` is false.
    """
    chunks: list[np.ndarray] = []
    kept: list[int] = []
    skipped: list[str] = []
    index = 0
    with tqdm(total=len(rows), desc="images", unit="img", disable=not progress) as bar:
        for batch in _batches(rows, batch_size):
            images = []
            for row in batch:
                try:
                    images.append(open_image(row.path, max_pixels=MAX_PIXELS))
                    kept.append(index)
                except BadImageError as exc:
                    if not skip_bad:
                        raise EmbedError(
                            f"{row.path}: {exc.reason} (pass --skip-bad-images to leave such files out)"
                        ) from exc
                    skipped.append(f"{row.path}: {exc.reason}")
                index += 1
            if images:
                chunks.append(encoder.encode_images(images))
            bar.update(len(batch))
    if not chunks:
        raise EmbedError("no image could be decoded")
    return np.concatenate(chunks), kept, skipped


def embed_texts(encoder: Encoder, texts: Sequence[str], batch_size: int, *, desc: str, progress: bool = True) -> np.ndarray:
    """Text embeddings of ``texts``, batch by batch with a progress bar."""
    chunks = []
    with tqdm(total=len(texts), desc=desc, unit="text", disable=not progress) as bar:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            chunks.append(encoder.encode_texts(chunk))
            bar.update(len(chunk))
    return np.concatenate(chunks) if chunks else np.zeros((0, encoder.dim), dtype=np.float32)


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to exactly ``path`` (np.savez would add ``.npz`` to a bare name), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=Path, required=True, help="folder of the images")
    p.add_argument("--captions", type=Path, default=None,
                   help="CSV with columns file,caption,label (default: IMAGES/captions.csv)")
    p.add_argument("--out", type=Path, required=True, help="output .npz file")
    p.add_argument("--model", default="ViT-B-32", help="open_clip architecture (default ViT-B-32)")
    p.add_argument("--pretrained", default="laion2b_s34b_b79k",
                   help="open_clip pretrained tag (Hugging Face cache; set HF_HUB_OFFLINE=1 when cached) "
                        "or a local checkpoint file (default laion2b_s34b_b79k)")
    p.add_argument("--prompt-template", default=DEFAULT_PROMPT,
                   help=f"class prompt, '{{}}' is the class name (default {DEFAULT_PROMPT!r})")
    p.add_argument("--batch-size", type=int, default=64, help="items per forward pass (default 64)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--limit", type=int, default=None, help="embed only the first N rows of the CSV")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="leave out images that do not decode (listed in meta) instead of stopping")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error("--batch-size must be positive")
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be positive")
    if "{}" not in args.prompt_template:
        p.error("--prompt-template must contain '{}' (the class name)")
    if not args.images.is_dir():
        p.error(f"--images: not a folder: {args.images}")
    if args.captions is None:
        args.captions = args.images / "captions.csv"
    return args


def run(args: argparse.Namespace) -> dict[str, object]:
    """Embed the data set described by ``args`` and write ``args.out``; returns the meta record.

    Raises:
        EmbedError: bad CSV or image, unknown model or pretrained tag.
        EncoderError: the weights are not available or do not load.
    """
    rows = read_captions(args.captions, args.images)[: args.limit]
    progress = not args.no_progress
    try:
        encoder = OpenClipEncoder(args.model, args.pretrained, device=args.device,
                                  threads=args.threads, batch_size=args.batch_size)
    except ValueError as exc:  # unknown model or pretrained tag
        raise EmbedError(str(exc)) from exc
    if not encoder.is_semantic:
        print(f"warning: {encoder.name} has random weights: its embeddings are NOT semantic", file=sys.stderr)

    images, kept, skipped = embed_images(encoder, rows, args.batch_size, skip_bad=args.skip_bad_images,
                                         progress=progress)
    rows = [rows[i] for i in kept]
    captions = embed_texts(encoder, [r.caption for r in rows], args.batch_size, desc="captions", progress=progress)
    class_names = sorted({r.label for r in rows})
    class_id = {name: i for i, name in enumerate(class_names)}
    labels = np.array([class_id[r.label] for r in rows], dtype=np.int64)
    prompts = embed_texts(encoder, [args.prompt_template.format(c) for c in class_names], args.batch_size,
                          desc="class prompts", progress=progress)
    meta: dict[str, object] = {
        "model": args.model,
        # open_clip ignores the tag of a model without published weights (the tiny test model).
        "pretrained": None if encoder.name.endswith("/random") else args.pretrained,
        "encoder": encoder.name,
        "is_semantic": encoder.is_semantic,
        "dim": encoder.dim,
        "n": len(rows),
        "classes": len(class_names),
        "prompt_template": args.prompt_template,
        "images": str(args.images),
        "captions_csv": str(args.captions),
        "skipped": skipped,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    save_npz(args.out, {
        "images": images.astype(np.float32, copy=False),
        "captions": captions.astype(np.float32, copy=False),
        "labels": labels,
        "class_names": np.array(class_names, dtype=str),
        "class_prompts": prompts.astype(np.float32, copy=False),
        "meta": np.array(json.dumps(meta)),
    })
    return meta


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        meta = run(args)
    except (EmbedError, EncoderError) as exc:
        # User errors (bad input, unknown model, weights not available): the message, no traceback.
        print(f"embed_clip: error: {exc}", file=sys.stderr)
        return 2
    skipped = meta["skipped"]
    print(f"wrote {args.out}: {meta['n']} images x {meta['dim']}-d, {meta['classes']} classes, "
          f"encoder {meta['encoder']}" + (f"; skipped {len(skipped)} bad image(s)" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
