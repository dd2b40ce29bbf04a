"""bench.datasets: the WordNet corpus parser and loader, on tiny fake wndb(5WN) data files."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is not installed

from bench import datasets  # noqa: E402
from bench.datasets import (  # noqa: E402
    DatasetError,
    collect_wordnet_corpus,
    load_minilm_wordnet,
    parse_wordnet_line,
)

LICENSE = (
    "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    "  2 Princeton University under the following license.  By obtaining, using  \n"
)
TEN_WORDS = "toilet 0 can 0 commode 0 crapper 0 pot 0 potty 0 stool 0 throne 0 john 0 lavatory 0"
FILES = {
    "noun": LICENSE
    + "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 002 @ 02083346 n 0000 ~ 01322604 n 0000 "
    "| a member of the genus Canis (probably descended from the common wolf) that has been domesticated "
    'by man since prehistoric times; occurs in many breeds; "the dog barked all night"  \n'
    f"04446276 06 n 0a {TEN_WORDS} 001 @ 04447443 n 0000 | a room or building equipped with one or more "
    "toilets  \n"
    # same words as the first synset up to case: dropped (each query has one correct document)
    "10042764 18 n 03 Dog 0 domestic_dog 0 Canis_familiaris 0 000 | informal term for a man; "
    '"you lucky dog"  \n',
    "verb": LICENSE
    + "01835496 38 v 02 travel 0 go 1 002 @ 01831531 v 0000 + 09629752 n 0101 02 + 01 00 + 02 00 "
    '| change location; move, travel, or proceed, also metaphorically; "How fast does your new car '
    'go?"; "We travelled from Rome to Naples by bus"  \n',
    "adj": LICENSE
    + "00001740 00 a 01 able 0 005 = 05200169 n 0000 ! 00002098 a 0101 | (usually followed by `to') "
    'having the necessary means or skill or know-how or authority to do something; "able to swim"  \n'
    "00014358 00 s 02 abounding 0 galore(ip) 0 001 & 00013887 a 0000 | existing in abundance; "
    '"abounding confidence"; "whiskey galore"  \n',
    "adv": LICENSE
    + '00005567 02 r 01 a_cappella 0 000 | without musical accompaniment; "they performed a cappella"  \n',
}

EXPECTED = [  # (qualname, lexname, query, document), sorted by synset id
    ("a00001740", "adj.all", "able",
     "(usually followed by `to') having the necessary means or skill or know-how or authority to do something"),
    ("a00014358", "adj.all", "abounding, galore", "existing in abundance"),
    ("n02084071", "noun.animal", "dog, domestic dog, Canis familiaris",
     "a member of the genus Canis (probably descended from the common wolf) that has been domesticated "
     "by man since prehistoric times; occurs in many breeds"),
    ("n04446276", "noun.artifact",
     "toilet, can, commode, crapper, pot, potty, stool, throne, john, lavatory",
     "a room or building equipped with one or more toilets"),
    ("r00005567", "adv.all", "a cappella", "without musical accompaniment"),
    ("v01835496", "verb.motion", "travel, go", "change location; move, travel, or proceed, also metaphorically"),
]


@pytest.fixture
def wordnet_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "wordnet"
    folder.mkdir()
    for part, text in FILES.items():
        (folder / f"data.{part}").write_text(text, encoding="utf-8")
    return folder


def test_parse_line_skips_license_and_reads_hex_word_count() -> None:
    assert parse_wordnet_line(LICENSE.splitlines(keepends=True)[0]) is None
    line = FILES["noun"].splitlines()[3]
    lex, offset, words, definition = parse_wordnet_line(line)
    assert (lex, offset, len(words), words[-1]) == (6, "04446276", 10, "lavatory")
    assert definition == "a room or building equipped with one or more toilets"


def test_collect_wordnet_corpus_exact_views_and_labels(wordnet_dir: Path) -> None:
    items, classes = collect_wordnet_corpus(wordnet_dir, min_class_size=1)
    assert [c.name for c in classes] == ["adj.all", "adv.all", "noun.animal", "noun.artifact", "verb.motion"]
    assert [c.prefixes for c in classes] == [(c.name,) for c in classes]
    got = [(it.qualname, classes[it.label].name, it.query, it.document) for it in items]
    assert got == EXPECTED
    assert classes[2].prompt == "a dictionary definition about animals"
    assert classes[4].prompt == "a dictionary definition about movement"


def test_small_classes_dropped_and_classes_capped(wordnet_dir: Path) -> None:
    items, classes = collect_wordnet_corpus(wordnet_dir, min_class_size=2)
    assert [c.name for c in classes] == ["adj.all"]
    assert [(it.qualname, it.label) for it in items] == [("a00001740", 0), ("a00014358", 0)]
    capped, _ = collect_wordnet_corpus(wordnet_dir, min_class_size=1, per_class_cap=1)
    assert len(capped) == 5 and sum(it.qualname.startswith("a") for it in capped) == 1
    assert capped == collect_wordnet_corpus(wordnet_dir, min_class_size=1, per_class_cap=1)[0]


def test_missing_wordnet_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="apt-get install wordnet-base"):
        collect_wordnet_corpus(tmp_path / "nowhere")


class _FakeModel:
    """Deterministic unit vectors from a hash of each text (no MiniLM needed)."""

    def encode(self, texts, **_kwargs):
        rows = [np.random.default_rng(int(hashlib.sha1(t.encode()).hexdigest()[:8], 16)).standard_normal(8)
                for t in texts]
        emb = np.array(rows, dtype=np.float32)
        return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def test_load_minilm_wordnet_split_and_cache(wordnet_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(datasets, "load_minilm", lambda **_kw: _FakeModel())
    cache = tmp_path / "cache"
    data = load_minilm_wordnet(4, 2, seed=1, wordnet_dir=wordnet_dir, cache_dir=cache, min_class_size=1)
    assert (data.name, data.dim, data.train.shape, data.test.shape) == ("wordnet", 8, (4, 8), (2, 8))
    assert data.class_names == ["adj.all", "adv.all", "noun.animal", "noun.artifact", "verb.motion"]
    assert data.facts["corpus_items"] == 6 and sum(data.facts["class_sizes"].values()) == 6
    items, classes = collect_wordnet_corpus(wordnet_dir, min_class_size=1)
    model = _FakeModel()
    np.testing.assert_allclose(data.class_prompts, model.encode([c.prompt for c in classes]))
    docs = model.encode([it.document for it in items])
    for row in range(2):  # each test document comes with its own query and label
        (j,) = np.flatnonzero(np.all(np.isclose(docs, data.test[row]), axis=1))
        np.testing.assert_allclose(data.test_queries[row], model.encode([items[j].query])[0])
        assert data.test_labels[row] == items[j].label
    # the second load reads the cache: no model, no embedding time
    monkeypatch.setattr(datasets, "load_minilm", lambda **_kw: pytest.fail("embedded again"))
    again = load_minilm_wordnet(4, 2, seed=1, wordnet_dir=wordnet_dir, cache_dir=cache, min_class_size=1)
    assert again.facts["embed_seconds"] == 0.0
    np.testing.assert_array_equal(again.test, data.test)
    with pytest.raises(DatasetError, match="corpus has 6"):
        load_minilm_wordnet(5, 2, wordnet_dir=wordnet_dir, cache_dir=cache, min_class_size=1)

