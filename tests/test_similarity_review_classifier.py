"""Search, review calibration and custom classifiers on real BirdNET window embeddings of bundled recordings."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from rl_core.custom_classifier import CustomClassifier, suggest_next, train_classifier
from rl_core.errors import ConfigError
from rl_core.review import calibrate_threshold, precision_by_score_bin, review_sample
from rl_core.similarity import WindowIndex, recall_at_k
from similar_fixture import multi_taxon_windows


@pytest.fixture(scope="module")
def taxon_windows():
    """(windows, 1024) BirdNET embeddings of the multi-taxon recordings and each window's taxon."""
    return multi_taxon_windows()


def test_search_finds_same_taxon_far_above_chance(taxon_windows, tmp_path):
    emb, taxa = taxon_windows
    index = WindowIndex(tmp_path / "index", dim=emb.shape[1])
    index.add(np.stack([np.arange(len(emb)) + 1000, np.zeros(len(emb))], axis=1), emb)
    precision = []
    for i in range(len(emb)):
        hits = index.search(emb[i], top_n=11)[0]
        assert hits.keys[0, 0] == i + 1000 and hits.similarities[0] == pytest.approx(1.0, abs=1e-3)
        assert np.all(np.diff(hits.similarities) <= 1e-6)
        precision.append(np.mean(taxa[hits.keys[1:, 0] - 1000] == taxa[i]))
    chance = np.mean([(np.sum(taxa == t) - 1) / (len(taxa) - 1) for t in taxa])
    assert np.mean(precision) > 0.8 > chance + 0.4


def test_index_reopens_grows_and_ignores_an_interrupted_add(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    index = WindowIndex(tmp_path, dim=16)
    keys = np.stack([np.arange(300), np.arange(300) % 7], axis=1)
    index.add(keys[:200], x[:200])
    with open(tmp_path / "vectors.f16", "ab") as handle:  # a crash after writing rows, before committing them
        handle.write(b"\x00" * 2 * 16 * 7)
    reopened = WindowIndex(tmp_path)
    assert reopened.count == 200
    reopened.add(keys[200:], x[200:])
    assert reopened.vectors().shape == (300, 16)
    assert reopened.search(x[250], 1)[0].keys.tolist() == [[250, 250 % 7]]
    with pytest.raises(ConfigError, match="16-d"):
        WindowIndex(tmp_path, dim=32)
    with pytest.raises(ConfigError, match="dimensions"):
        reopened.search(np.ones(8), 5)


def test_approximate_index_recall_against_exact(tmp_path):
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(40, 64))
    x = (centres[rng.integers(0, 40, 6000)] + 0.6 * rng.normal(size=(6000, 64))).astype(np.float32)
    index = WindowIndex(tmp_path, dim=64, exact_limit=4000)
    keys = np.stack([np.arange(6000), np.zeros(6000)], axis=1)
    index.add(keys[:3000], x[:3000])
    assert not index.approximate
    index.add(keys[3000:], x[3000:])  # crosses the limit: the IVF index is built, then grows
    assert index.approximate and (tmp_path / "ivf.faiss").is_file()
    queries = x[rng.choice(6000, 20, replace=False)]
    recall = recall_at_k(index.search(queries, 100), index.search(queries, 100, exact=True))
    assert recall >= 0.95
    assert WindowIndex(tmp_path).approximate  # reopened from disk


def test_classifier_from_few_labels_ranks_far_above_chance(taxon_windows, tmp_path):
    emb, taxa = taxon_windows
    rng = np.random.default_rng(0)
    target = "Hydrobates pelagicus"
    pos, neg = np.flatnonzero(taxa == target), np.flatnonzero(taxa != target)
    train = np.concatenate([rng.choice(pos, 5, replace=False), rng.choice(neg, 20, replace=False)])
    labels = [target] * 5 + ["negative"] * 20
    clf = train_classifier(emb[train], labels, "birdnet_v2_4")
    assert clf.card.positives == {target: 5} and clf.card.negatives == 20
    assert set(clf.card.metrics[target]) == {"precision", "recall", "average_precision", "positives"}
    test = np.setdiff1d(np.arange(len(emb)), train)
    ap = average_precision_score(taxa[test] == target, clf.scores(emb[test])[:, 0])
    assert ap > 0.9 > np.mean(taxa[test] == target) + 0.5
    weights, card = clf.save(tmp_path / "petrel")
    assert weights.name == "petrel.safetensors" and card.name == "petrel.yaml"
    again = CustomClassifier.load(tmp_path / "petrel.safetensors")
    np.testing.assert_allclose(again.scores(emb), clf.scores(emb), atol=1e-6)
    with pytest.raises(ConfigError, match="trained on birdnet_v2_4"):
        again.check_backbone("esp_aves2_sl_beats_all")
    nxt = suggest_next(clf.scores(emb)[:, 0], np.isin(np.arange(len(emb)), train), n=3)
    assert len(nxt["top"]) == 3 and not set(nxt["top"]) & set(train)


def test_classifier_refuses_bad_label_sets():
    x = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
    with pytest.raises(ConfigError, match="no positive labels"):
        train_classifier(x, ["negative"] * 6, "birdnet_v2_4")
    with pytest.raises(ConfigError, match="fewer than 2 positives"):
        train_classifier(x, ["call", "negative", "negative", "negative", "negative", "negative"], "birdnet_v2_4")
    with pytest.raises(ConfigError, match="6 labels"):
        train_classifier(x[:5], ["call"] * 6, "birdnet_v2_4")


def test_calibration_threshold_reaches_target_precision():
    rng = np.random.default_rng(3)
    scores = rng.uniform(0.05, 0.99, 400)
    logit = np.log(scores / (1 - scores))
    correct = rng.uniform(size=400) < 1 / (1 + np.exp(-(0.5 + 1.5 * logit)))  # true intercept 0.5, slope 1.5
    verdicts = np.where(correct, "positive", "negative")
    cal = calibrate_threshold(scores, verdicts, target_precision=0.9, species="X")
    expected = 1 / (1 + np.exp(-(np.log(9) - 0.5) / 1.5))
    assert cal.threshold == pytest.approx(expected, abs=0.08)
    assert 1.0 < cal.slope < 2.2
    bins = precision_by_score_bin(scores, verdicts, bins=5)
    assert bins["verified"].sum() == 400 and bins["precision"].iloc[-1] > bins["precision"].iloc[0]
    few = calibrate_threshold(scores[:5], verdicts[:5])
    assert few.threshold is None and "only 5" in few.note
    with pytest.raises(ConfigError, match="unknown verdict"):
        calibrate_threshold([0.5], ["maybe"])
    spread = review_sample(scores, n=10, order="bins")
    assert len(set((scores[spread] * 10).astype(int))) >= 8
