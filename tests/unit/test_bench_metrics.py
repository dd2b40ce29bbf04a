"""Known-answer tests of the benchmark metrics (bench/metrics.py) on tiny arrays."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is not installed

from bench.metrics import (  # noqa: E402
    MetricError,
    ans_decode,
    ans_encode,
    coded_size_bits,
    cross_entropy_bits,
    empirical_entropy_bits,
    exact_topk_inner_product,
    paired_recall,
    position_models,
    recall_at_k,
    zero_shot_accuracy,
)


def test_exact_topk_orders_by_inner_product() -> None:
    database = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [-1.0, 0.0]], dtype=np.float32)
    queries = np.array([[1.0, 0.1], [-0.1, -1.0]], dtype=np.float32)
    ids = exact_topk_inner_product(queries, database, k=3, chunk=1)
    assert ids.tolist() == [[0, 2, 1], [3, 0, 2]]


def test_exact_topk_rejects_k_above_database() -> None:
    with pytest.raises(MetricError):
        exact_topk_inner_product(np.ones((1, 2)), np.ones((2, 2)), k=3)


def test_recall_at_k_counts_the_overlap_ignoring_order() -> None:
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    found = np.array([[3, 2, 9], [7, 8, 9]])
    assert recall_at_k(found, truth, k=3) == pytest.approx(2 / 6)
    assert recall_at_k(truth, truth, k=3) == 1.0
    # only the first k columns of each side count
    assert recall_at_k(np.array([[1, 9, 2]]), np.array([[1, 2, 3]]), k=2) == pytest.approx(0.5)


def test_recall_at_k_rejects_short_or_mismatched_rows() -> None:
    with pytest.raises(MetricError):
        recall_at_k(np.array([[1, 2]]), np.array([[1, 2, 3]]), k=3)
    with pytest.raises(MetricError):
        recall_at_k(np.array([[1, 2, 3]]), np.array([[1, 2, 3], [1, 2, 3]]), k=3)


def test_paired_recall_at_1_and_at_k() -> None:
    found = np.array([[0, 5, 6], [9, 1, 2], [7, 8, 4]])
    targets = np.array([0, 1, 2])
    assert paired_recall(found, targets, k=1) == pytest.approx(1 / 3)
    assert paired_recall(found, targets, k=2) == pytest.approx(2 / 3)
    assert paired_recall(found, targets, k=3) == pytest.approx(2 / 3)


def test_zero_shot_accuracy_uses_cosine_not_raw_inner_product() -> None:
    prompts = np.array([[1.0, 0.0], [0.0, 10.0]])  # a long prompt must not win by norm
    vectors = np.array([[3.0, 1.0], [0.1, 2.0], [5.0, 4.0], [-1.0, -0.5]])
    labels = np.array([0, 1, 0, 1])
    # cosine predicts 0, 1, 0, 1; raw inner products would predict 0, 1, 1, 1
    assert zero_shot_accuracy(vectors, prompts, labels) == 1.0
    assert zero_shot_accuracy(vectors, prompts, np.array([0, 0, 0, 0])) == 0.5


def test_empirical_entropy_of_known_distributions() -> None:
    uniform4 = np.array([[0], [1], [2], [3]])
    constant = np.zeros((4, 1), dtype=int)
    assert empirical_entropy_bits(uniform4) == pytest.approx(2.0)
    assert empirical_entropy_bits(constant) == 0.0
    # positions add up: 2 bits + 1 bit (0/1 half each) + 0 bits
    two = np.array([[0, 0, 7], [1, 1, 7], [2, 0, 7], [3, 1, 7]])
    assert empirical_entropy_bits(two) == pytest.approx(3.0)
    skew = np.array([[0], [0], [0], [1]])
    assert empirical_entropy_bits(skew) == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))


def test_position_models_are_smoothed_frequencies() -> None:
    probs = position_models(np.array([[0, 1], [0, 1], [1, 1]]), alphabet_size=3, smoothing=1.0)
    assert probs[0].tolist() == pytest.approx([3 / 6, 2 / 6, 1 / 6])
    assert probs[1].tolist() == pytest.approx([1 / 6, 4 / 6, 1 / 6])
    with pytest.raises(MetricError):
        position_models(np.array([[3]]), alphabet_size=3)


def test_cross_entropy_of_a_uniform_model_is_log_alphabet() -> None:
    probs = np.full((2, 8), 1 / 8)
    assert cross_entropy_bits(probs, np.array([[0, 7], [3, 4]])) == pytest.approx(6.0)


def test_ans_round_trip_and_size_near_the_ideal() -> None:
    rng = np.random.default_rng(0)
    n, alphabet = 4000, 16
    skewed = rng.choice(alphabet, size=(n, 3), p=np.r_[0.5, np.full(alphabet - 1, 0.5 / (alphabet - 1))])
    probs = position_models(skewed, alphabet)
    compressed = ans_encode(probs, skewed)
    assert np.array_equal(ans_decode(probs, compressed, n), skewed)
    ideal = cross_entropy_bits(probs, skewed)
    coded = coded_size_bits(skewed, skewed, alphabet)
    assert ideal <= coded <= ideal * 1.01 + 64 / n
    assert coded < 3 * math.log2(alphabet)  # beats the fixed-length 12 bits per row


def test_coded_size_of_uniform_symbols_is_close_to_fixed_length() -> None:
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, size=(20000, 2))
    test = rng.integers(0, 256, size=(3000, 2))
    assert coded_size_bits(train, test, 256) == pytest.approx(16.0, abs=0.1)
