"""facegnet.evaluation.metrics against scikit-learn: every headline figure (ROC, AUC, TAR at a FAR, best
threshold, k-fold accuracy, precision/recall/F1) on random scores, heavily tied scores and LFW's fold layout."""
from __future__ import annotations

import numpy as np
import pytest

sklearn_metrics = pytest.importorskip("sklearn.metrics")

from facegnet.evaluation import metrics  # noqa: E402
from tests.conftest import LFW  # noqa: E402


def _pairs(seed: int, n: int = 600, tied: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Same-person pairs score higher on average; ``tied`` rounds to 20 distinct values (many ties)."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.5
    scores = rng.normal(0.0, 0.15, n) + np.where(labels, 0.35, 0.05)
    if tied:
        scores = np.round(scores * 20) / 20
    return scores, labels


CASES = [pytest.param(*_pairs(seed, tied=tied), id=f"{'tied' if tied else 'random'}-{seed}")
         for seed in (0, 1, 2) for tied in (False, True)]


def _best_accuracy_brute_force(scores: np.ndarray, labels: np.ndarray) -> float:
    """The best accuracy of any threshold: every point of scikit-learn's full ROC (each distinct score, and
    accepting none) as correct decisions, true accepts plus true rejects."""
    fpr, tpr, _ = sklearn_metrics.roc_curve(labels, scores, drop_intermediate=False)
    positives, negatives = labels.sum(), (~labels).sum()
    return float(((tpr * positives + (1 - fpr) * negatives) / labels.size).max())


@pytest.mark.parametrize("scores,labels", CASES)
def test_roc_curve_and_auc_match_sklearn(scores, labels):
    fpr, tpr, thresholds = metrics.roc_curve(scores, labels)
    sk_fpr, sk_tpr, sk_thresholds = sklearn_metrics.roc_curve(labels, scores, drop_intermediate=False)
    assert np.allclose(fpr, sk_fpr) and np.allclose(tpr, sk_tpr)
    assert np.array_equal(thresholds[1:], sk_thresholds[1:]) and np.isinf(thresholds[0])
    assert metrics.roc_auc(scores, labels) == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize("far", [1e-3, 1e-2, 0.05, 0.2])
@pytest.mark.parametrize("scores,labels", CASES)
def test_tar_at_far_matches_sklearn_roc(scores, labels, far):
    tar, threshold = metrics.tar_at_far(scores, labels, far)
    sk_fpr, sk_tpr, _ = sklearn_metrics.roc_curve(labels, scores, drop_intermediate=False)
    assert tar == pytest.approx(sk_tpr[sk_fpr <= far].max())  # the best TAR whose FAR stays within the bound
    accepted = scores >= threshold
    assert accepted[~labels].mean() <= far and accepted[labels].mean() == pytest.approx(tar)


@pytest.mark.parametrize("scores,labels", CASES)
def test_best_threshold_is_the_best_accuracy(scores, labels):
    threshold, accuracy = metrics.best_threshold(scores, labels)
    assert accuracy == pytest.approx(sklearn_metrics.accuracy_score(labels, scores >= threshold))
    assert accuracy == pytest.approx(_best_accuracy_brute_force(scores, labels))


def test_best_threshold_on_separable_and_one_sided_scores():
    assert metrics.best_threshold([0.9, 0.8, 0.2, 0.1], [True, True, False, False]) == (pytest.approx(0.5), 1.0)
    threshold, accuracy = metrics.best_threshold([0.5, 0.5, 0.5], [True, False, True])  # one tied run
    assert accuracy == pytest.approx(2 / 3) and threshold < 0.5


def _kfold_reference(scores, labels, folds) -> list[float]:
    """For each fold (scikit-learn's PredefinedSplit), the best accuracy any threshold reaches on the others."""
    from sklearn.model_selection import PredefinedSplit

    return [_best_accuracy_brute_force(scores[train], labels[train]) for train, _ in PredefinedSplit(folds).split()]


def _lfw_layout() -> tuple[np.ndarray, np.ndarray]:
    """Labels and folds in the order of LFW's pairs.txt (10 folds of 300 same then 300 different pairs)."""
    from facegnet.evaluation.lfw import read_pairs

    if not (LFW / "pairs.txt").is_file():
        pytest.skip("LFW's pairs.txt not available")
    protocol = read_pairs(LFW)
    return protocol.same, protocol.folds


@pytest.mark.parametrize("tied", [False, True], ids=["random", "tied"])
def test_kfold_accuracy_on_lfw_fold_layout_matches_sklearn(tied):
    labels, folds = _lfw_layout()
    assert labels.size == 6000 and np.unique(folds).size == 10 and labels.sum() == 3000
    rng = np.random.default_rng(7)
    scores = rng.normal(0.0, 0.15, labels.size) + np.where(labels, 0.35, 0.05)
    if tied:
        scores = np.round(scores * 20) / 20
    report = metrics.kfold_accuracy(scores, labels, folds)
    reference_train = _kfold_reference(scores, labels, folds)
    fold_ids = np.unique(folds)
    expected = []
    for fold, threshold, best_train in zip(fold_ids, report["fold_thresholds"], reference_train):
        test = folds == fold
        # facegnet's threshold is optimal on the other nine folds (any threshold in the best gap is; the test
        # fold's accuracy is then taken at the very threshold facegnet chose) ...
        assert sklearn_metrics.accuracy_score(labels[~test], scores[~test] >= threshold) == pytest.approx(best_train)
        expected.append(sklearn_metrics.accuracy_score(labels[test], scores[test] >= threshold))
    # ... and its fold accuracies, their mean and (population) std are scikit-learn's on this fold.
    assert report["fold_accuracies"] == pytest.approx(expected)
    assert report["accuracy"] == pytest.approx(np.mean(expected)) and report["accuracy_std"] == pytest.approx(np.std(expected))
    per_pair = np.empty_like(scores)
    for fold, threshold in zip(fold_ids, report["fold_thresholds"]):
        per_pair[folds == fold] = threshold
    predicted = scores >= per_pair
    assert report["precision"] == pytest.approx(sklearn_metrics.precision_score(labels, predicted))
    assert report["recall"] == pytest.approx(sklearn_metrics.recall_score(labels, predicted))
    assert report["f1"] == pytest.approx(sklearn_metrics.f1_score(labels, predicted))
    tn, fp, fn, tp = sklearn_metrics.confusion_matrix(labels, predicted).ravel()
    assert report["confusion"] == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}


def test_verification_report_quotes_the_same_figures():
    scores, labels = _pairs(3, n=1000)
    report = metrics.verification_report(scores, labels)
    assert report["auc"] == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores))
    assert report["pairs"] == 1000 and report["same_pairs"] == int(labels.sum())
    assert report["tar@far=0.01"] == metrics.tar_at_far(scores, labels, 0.01)[0]


def test_metrics_refuse_empty_or_mismatched_input():
    with pytest.raises(ValueError):
        metrics.roc_auc([], [])
    with pytest.raises(ValueError):
        metrics.best_threshold([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="two folds"):
        metrics.kfold_accuracy([0.1, 0.2], [True, False], [0, 0])


def _clustered_items(seed: int, n: int = 500, people: int = 60, dim: int = 6):
    """Integer-valued embeddings (inner products exact in float32, whatever the summation order; many ties)
    around one vector per person, and the person of each item; some people have more than 10 items."""
    rng = np.random.default_rng(seed)
    person = np.sort(rng.integers(0, people, n))
    centres = rng.integers(-3, 4, (people, dim))
    return (centres[person] + rng.integers(-2, 3, (n, dim))).astype(np.float32), person


@pytest.mark.parametrize("chunk", [7, 64, 10_000])
@pytest.mark.parametrize("seed", [0, 1])
def test_all_pairs_tar_matches_the_full_list_of_pairs(seed, chunk):
    embeddings, person = _clustered_items(seed)
    fars = (1e-1, 1e-2, 1e-3, 1e-4)
    report = metrics.all_pairs_tar_at_far(embeddings, person, fars=fars, max_per_person=10, chunk=chunk)
    i, j = np.triu_indices(len(person), 1)
    scores = np.einsum("ij,ij->i", embeddings[i].astype(np.float64), embeddings[j])
    same = person[i] == person[j]
    first_ten = metrics.genuine_subset(person, 10)
    keep = ~same | (first_ten[i] & first_ten[j])  # every impostor pair; genuine ones of the first ten photos
    assert report["impostor_pairs"] == (~same).sum() and report["genuine_pairs"] == (same & keep).sum()
    assert report["highest_impostor"] == scores[~same].max()
    i_top, j_top = report["highest_impostor_pair"]
    assert person[i_top] != person[j_top] and embeddings[i_top] @ embeddings[j_top] == scores[~same].max()
    for far in fars:
        tar, threshold = metrics.tar_at_far(scores[keep], same[keep], far)
        assert report[f"tar@far={far:g}"] == tar and report[f"threshold@far={far:g}"] == threshold
    assert 0 < report["tar@far=0.001"] < report["tar@far=0.1"] < 1  # the figures are not degenerate


def test_genuine_subset_keeps_each_persons_first_photos():
    people = np.array(["b", "a", "b", "b", "a", "c", "b"])
    assert metrics.genuine_subset(people, 2).tolist() == [True, True, True, False, True, True, False]
    assert metrics.genuine_subset(people, None).all()
    with pytest.raises(ValueError):
        metrics.all_pairs_tar_at_far(np.ones((1, 3)), ["a"])
