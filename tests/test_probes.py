"""aef_lit.evaluation.probes: metrics, probes, balanced training sets, intervals, splits, trials."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from aef_lit.evaluation import probes as P


def _clusters(K=4, n=1200, F=16, seed=0, spread=10.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(K, F)) * spread
    y = rng.integers(0, K, n)
    return centres[y] + rng.normal(size=(n, F)), y


@pytest.mark.parametrize("probe", P.CLASSIFICATION_PROBES)
def test_separable_clusters_score_one(probe):
    x, y = _clusters()
    rows = P.run_trials({"f": x}, y, lambda r, i: P.pixel_split(len(y), r), probes=(probe,), folds=5)
    assert all(r["balanced_accuracy"] == 1.0 for r in rows if r["shots"] != "1")
    # one sample per class is already enough for such clusters
    assert np.mean([r["balanced_accuracy"] for r in rows if r["shots"] == "1"]) > 0.99


@pytest.mark.parametrize("probe", P.CLASSIFICATION_PROBES)
def test_permuted_labels_score_chance_within_the_interval(probe):
    x, y = _clusters(K=5, n=1500, seed=1)
    y = np.random.default_rng(2).permutation(y)
    rows = P.run_trials({"f": x}, y, lambda r, i: P.pixel_split(len(y), r), probes=(probe,),
                        shots=(10, "max"), folds=20, seed=3)
    tab = P.summarise(rows)
    for _, r in tab.iterrows():
        assert abs(r["balanced_accuracy"] - 0.2) <= max(r["balanced_accuracy_ci"], 0.01) + 0.01, r.to_dict()


def test_balanced_accuracy_and_the_majority_answer():
    y = np.array([0] * 90 + [1] * 10)
    assert P.balanced_accuracy(y, np.zeros(100, int)) == 0.5
    assert P.balanced_accuracy(y, y) == 1.0
    m = P.confusion_matrix(y, np.zeros(100, int), 2)
    assert m.tolist() == [[90, 0], [10, 0]]


def test_regression_metrics():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert P.r2_score(y, y) == 1.0
    assert P.r2_score(y, np.full(4, y.mean())) == 0.0
    assert P.r2_score(y, y[::-1]) < 0
    assert P.mean_absolute_error(y, y + 0.5) == 0.5


def test_least_squares_equals_the_normal_equations_and_the_min_norm_limit():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6))
    t = rng.normal(size=(50, 3))
    xb = np.c_[x, np.ones(50)]
    assert np.allclose(P.least_squares(x, t), np.linalg.solve(xb.T @ xb, xb.T @ t))
    # fewer samples than unknowns: the minimum-norm solution, i.e. ridge as lambda -> 0
    x, t = rng.normal(size=(4, 10)), rng.normal(size=(4, 2))
    xb = np.c_[x, np.ones(4)]
    lam = 1e-9
    ridge = xb.T @ np.linalg.solve(xb @ xb.T + lam * np.eye(4), t)
    assert np.allclose(P.least_squares(x, t), ridge, atol=1e-6)
    assert np.allclose(xb @ P.least_squares(x, t), t)  # it interpolates


def test_linear_classify_by_hand():
    # two classes on a line: the +-1 least-squares line crosses zero at the midpoint 1.5
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 0, 1, 1])
    pred = P.linear_classify(x, y, np.array([[1.4], [1.6]]))
    assert pred.tolist() == [0, 1]


def test_knn_ties_go_to_the_nearest_tied_class():
    train = np.array([[0.0], [1.0], [2.5]])
    labels = np.array([7, 8, 9])
    # the 3 nearest are all different classes: the nearest one decides
    assert P.knn_classify(train, labels, np.array([[0.9]]), k=3).tolist() == [8]
    assert P.knn_classify(train, labels, np.array([[2.4]]), k=3).tolist() == [9]
    # a real majority wins over the nearest
    train2 = np.array([[0.0], [1.0], [1.1]])
    assert P.knn_classify(train2, np.array([1, 2, 2]), np.array([[0.2]]), k=3).tolist() == [2]
    assert P.knn_classify(train2, np.array([1, 2, 2]), np.array([[0.2]]), k=1).tolist() == [1]


def test_knn_regress_and_unknown_probe():
    train = np.array([[0.0], [1.0], [2.0], [10.0]])
    assert P.knn_regress(train, np.array([0.0, 1.0, 2.0, 10.0]), np.array([[1.0]]), k=3)[0] == 1.0
    with pytest.raises(ValueError, match="unknown probe"):
        P.probe_predict("svm", train, np.zeros(4), train)
    with pytest.raises(ValueError, match="kind"):
        P.probe_predict("knn1", train, np.zeros(4), train, kind="ranking")


def test_balanced_sample_counts_and_bad_shots():
    y = np.array([0] * 50 + [1] * 5 + [2] * 500)
    rng = np.random.default_rng(0)
    assert np.bincount(y[P.balanced_sample(y, np.arange(len(y)), "max", rng)]).tolist() == [50, 5, 300]
    assert np.bincount(y[P.balanced_sample(y, np.arange(len(y)), 1, rng)]).tolist() == [1, 1, 1]
    pool = np.arange(50, 555)  # class 0 not in the pool
    assert 0 not in y[P.balanced_sample(y, pool, 10, rng)]
    for bad in (0, -1, "all", 1.5, True):
        with pytest.raises(ValueError, match="shots"):
            P.balanced_sample(y, np.arange(len(y)), bad, rng)


def test_t_interval_covers_the_true_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(5)
    hits = [abs(m - 3.0) <= h for m, h in (P.mean_ci(rng.exponential(3.0, size=40)) for _ in range(3000))]
    # exponential scores are skewed: the t interval is approximate, still near 95 %
    assert 0.92 <= np.mean(hits) <= 0.97
    hits = [abs(m) <= h for m, h in (P.mean_ci(rng.normal(size=20)) for _ in range(3000))]
    assert 0.935 <= np.mean(hits) <= 0.965
    assert np.isnan(P.mean_ci([0.5])[1]) and P.mean_ci([0.5])[0] == 0.5


@pytest.mark.parametrize("seed", range(5))
def test_no_test_pixel_within_the_buffer_of_a_training_pixel(seed):
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.arange(100), np.arange(90), indexing="ij")
    xy = np.stack([cols.ravel(), -rows.ravel()], 1) * 10.0
    groups = (cols.ravel() >= 45).astype(int)  # two "sites" side by side
    s = P.block_split(xy, rng, groups=groups, block=200.0, buffer=150.0)
    assert len(np.intersect1d(s.pool, s.test)) == 0 and len(s.test) > 0 and len(s.pool) > 0
    for g in (0, 1):
        tr, te = s.pool[groups[s.pool] == g], s.test[groups[s.test] == g]
        d = cKDTree(xy[tr]).query(xy[te], p=np.inf)[0]
        assert d.min() > 150.0
    # a random pixel split has test pixels right next to training pixels
    r = P.pixel_split(len(xy), rng)
    assert cKDTree(xy[r.pool]).query(xy[r.test], p=np.inf)[0].min() <= 10.0


def test_block_split_refuses_one_block():
    xy = np.random.default_rng(0).uniform(0, 100, size=(50, 2))
    with pytest.raises(ValueError, match="one"):
        P.block_split(xy, np.random.default_rng(0), block=1000.0)


def test_thinned_points_are_far_apart_and_the_thinning_is_maximal():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 10_000, size=(400, 2))
    kept = P.thin_points(xy, rng, 1280.0)
    d = np.sqrt(((xy[kept, None] - xy[None, kept]) ** 2).sum(-1)) + np.eye(len(kept)) * 1e9
    assert d.min() >= 1280.0
    dropped = np.setdiff1d(np.arange(len(xy)), kept)
    assert cKDTree(xy[kept]).query(xy[dropped])[0].max() < 1280.0  # every dropped point had a reason
    s = P.point_split(xy, np.random.default_rng(1))
    assert len(np.intersect1d(s.pool, s.test)) == 0
    assert len(s.pool) + len(s.test) == len(P.thin_points(xy, np.random.default_rng(1)))


def test_site_split():
    groups = np.array(["a", "a", "b", "c", "b"])
    s = P.site_split(groups, "b")
    assert s.test.tolist() == [2, 4] and s.pool.tolist() == [0, 1, 3]


def test_methods_share_folds_and_training_sets():
    x, y = _clusters(K=3, n=600)
    noise = np.random.default_rng(9).normal(size=x.shape)
    rows = P.run_trials({"a": x, "b": noise}, y, lambda r, i: P.pixel_split(len(y), r), folds=4, seed=7)
    a = [(r["fold"], r["shots"], r["probe"], r["n_train"], r["n_test"]) for r in rows if r["method"] == "a"]
    b = [(r["fold"], r["shots"], r["probe"], r["n_train"], r["n_test"]) for r in rows if r["method"] == "b"]
    assert a == b
    # a second run with the same seed is identical; another seed is not
    again = P.run_trials({"a": x}, y, lambda r, i: P.pixel_split(len(y), r), folds=4, seed=7)
    assert [r["balanced_accuracy"] for r in again] == [r["balanced_accuracy"] for r in rows if r["method"] == "a"]
    m, h = P.paired_difference(rows, "a", "b", probe="knn3", shots="10")
    assert m - h > 0.3  # clusters beat noise, fold by fold
    m0, h0 = P.paired_difference(rows + [{**r, "method": "c"} for r in rows if r["method"] == "a"], "a", "c")
    assert m0 == 0.0


def test_run_trials_refuses_nan_and_misaligned_features():
    x, y = _clusters(n=100)
    x[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        P.run_trials({"f": x}, y, lambda r, i: P.pixel_split(len(y), r), folds=1)
    with pytest.raises(ValueError, match="rows"):
        P.run_trials({"f": x[:50]}, y, lambda r, i: P.pixel_split(len(y), r), folds=1)


def test_regression_trials_recover_a_linear_target():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(800, 5))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + 0.01 * rng.normal(size=800)
    rows = P.run_trials({"f": x}, y, lambda r, i: P.pixel_split(len(y), r), kind="regression", folds=3)
    lin = [r for r in rows if r["probe"] == "linear" and r["shots"] == "100"]
    assert all(r["r2"] > 0.999 and r["mae"] < 0.05 for r in lin)
    shuffled = rng.permutation(y)
    rows = P.run_trials({"f": x}, shuffled, lambda r, i: P.pixel_split(len(y), r), kind="regression", folds=3)
    assert all(r["r2"] < 0.05 for r in rows if r["shots"] == "max")


def test_block_split_says_when_the_buffer_swallows_the_pool():
    rows, cols = np.meshgrid(np.arange(30), np.arange(30), indexing="ij")
    xy = np.stack([cols.ravel(), -rows.ravel()], 1) * 10.0  # 300 m square
    with pytest.raises(ValueError, match="too small"):
        P.block_split(xy, np.random.default_rng(0), block=150.0, buffer=400.0)


def test_test_sets_are_capped_per_class_and_shared():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(5000, int), np.ones(300, int)]
    x = rng.normal(size=(len(y), 3))
    rows = P.run_trials({"a": x, "b": x + 1}, y, lambda r, i: P.pixel_split(len(y), r), folds=2, shots=(10,),
                        max_test_per_class=1000)
    assert {r["n_test"] for r in rows} <= {1000 + c for c in range(120, 181)}  # 1000 zeros + all ~150 ones
    full = P.run_trials({"a": x}, y, lambda r, i: P.pixel_split(len(y), r), folds=1, shots=(10,),
                        max_test_per_class=None)
    assert full[0]["n_test"] == 2650
