"""aef_lit.applications: similarity, top-k, spherical k-means, change, thresholds, few clicks, periods."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from aef_lit.applications import (
    PeriodSummariser,
    as_field,
    change_map,
    few_click_map,
    kmeans_map,
    otsu_threshold,
    similarity,
    threshold_from_labels,
    top_k,
)


def _clusters(k=4, E=16, H=24, W=30, noise=0.05, seed=0):
    """A field of `k` planted directions (vertical stripes of classes), unit vectors."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, E))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    lab = (np.arange(W)[None, :] * k // W).repeat(H, 0)
    x = centres[lab].transpose(2, 0, 1) + noise * rng.normal(size=(E, H, W))
    return (x / np.linalg.norm(x, axis=0, keepdims=True)).astype(np.float32), lab


def test_as_field_reads_arrays_and_aef_files_and_refuses_bad_input(tmp_path):
    from aef_lit.data import Grid
    from aef_lit.maps.aef_format import write_aef

    x, _ = _clusters(E=64, H=16, W=16)
    x[:, 0, 0] = np.nan
    grid = Grid("EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0), 16, 16)
    path = write_aef(tmp_path / "f.tif", x, grid.crs, grid.affine)
    f = as_field(path)
    assert f.shape == x.shape and np.isnan(f[:, 0, 0]).all()
    assert np.nanmax(np.abs(f - x)) < 0.02  # int8 quantisation
    # every application agrees on the file and on the array, to quantisation
    assert np.nanmax(np.abs(similarity(path, (5, 5)) - similarity(x, (5, 5)))) < 0.02
    with pytest.raises(ValueError, match="E x H x W"):
        as_field(np.zeros((4, 4)))
    bad = x.copy()
    bad[3, 2, 2] = np.nan
    with pytest.raises(ValueError, match="some bands only"):
        as_field(bad)


def test_similarity_is_one_at_the_query_and_top_k_finds_its_cluster_first():
    x, lab = _clusters()
    s = similarity(x, (3, 2))
    assert s[3, 2] == pytest.approx(1.0, abs=1e-5) and np.nanmax(s) <= 1 + 1e-5
    pix, scores = top_k(x, (3, 2), k=20)
    assert tuple(pix[0]) == (3, 2) and np.all(np.diff(scores) <= 1e-7)
    assert (lab[pix[:, 0], pix[:, 1]] == lab[3, 2]).all()
    pix2, _ = top_k(x, (3, 2), k=5, exclude=[(3, 2)])
    assert (3, 2) not in map(tuple, pix2)
    # a set of pixels and an explicit vector are queries too
    both = similarity(x, [(3, 2), (3, 29)])
    assert both[3, 2] > 0.5 and both[3, 29] > 0.5
    assert np.allclose(similarity(x, x[:, 3, 2] * 7.0), s, atol=1e-6)  # scale-free
    with pytest.raises(ValueError, match="outside"):
        similarity(x, (100, 0))


def test_nodata_pixels_stay_nodata_and_are_never_found():
    x, _ = _clusters()
    x[:, :, :3] = np.nan
    s = similarity(x, (5, 10))
    assert np.isnan(s[:, :3]).all() and np.isfinite(s[:, 3:]).all()
    pix, _ = top_k(x, (5, 10), k=10_000)
    assert len(pix) == x.shape[1] * (x.shape[2] - 3) and (pix[:, 1] >= 3).all()
    lab, _ = kmeans_map(x, 3)
    assert (lab[:, :3] == -1).all() and (lab[:, 3:] >= 0).all()
    with pytest.raises(ValueError, match="no embedding"):
        similarity(x, (0, 0))


def test_spherical_kmeans_recovers_planted_clusters_largest_first():
    x, lab = _clusters(k=4, noise=0.1)
    got, centres = kmeans_map(x, 4, seed=1)
    # each planted class maps to one cluster and back (a perfect matching)
    pairs = {(a, b) for a, b in zip(lab.ravel(), got.ravel())}
    assert len(pairs) == 4
    sizes = np.bincount(got.ravel())
    assert np.all(np.diff(sizes) <= 0)  # cluster 0 is the largest
    assert np.allclose(np.linalg.norm(centres, axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="between 1"):
        kmeans_map(x, 0)


def test_change_score_is_zero_for_the_same_field_half_for_orthogonal_one_for_opposite():
    x, _ = _clusters()
    assert np.allclose(change_map(x, x), 0, atol=1e-6)
    assert np.allclose(change_map(x, -x), 1, atol=1e-6)
    e = np.zeros((2, 1, 1), np.float32)
    e[0] = 1
    f = np.zeros_like(e)
    f[1] = 1
    assert change_map(e, f)[0, 0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="differ in shape"):
        change_map(x, x[:, :5])


def test_otsu_splits_a_bimodal_histogram_between_its_modes():
    rng = np.random.default_rng(0)
    v = np.r_[rng.normal(0.1, 0.02, 5000), rng.normal(0.6, 0.05, 1000), [np.nan]]
    t = otsu_threshold(v)
    assert 0.2 < t < 0.45
    with pytest.raises(ValueError):
        otsu_threshold(np.ones(10))


def test_label_threshold_maximises_balanced_accuracy_against_brute_force():
    rng = np.random.default_rng(1)
    score = rng.uniform(size=400)
    changed = (score + rng.normal(0, 0.2, 400) > 0.6).astype(int)
    changed[:20] = -1  # unlabelled
    thr, bacc = threshold_from_labels(score, changed)
    keep = changed >= 0
    y, s = changed[keep].astype(bool), score[keep]

    def ba(t):
        p = s > t
        return ((p & y).sum() / y.sum() + (~p & ~y).sum() / (~y).sum()) / 2

    best = max(ba(t) for t in np.r_[s, -1.0])
    assert bacc == pytest.approx(best) and ba(thr) == pytest.approx(best)
    with pytest.raises(ValueError, match="both kinds"):
        threshold_from_labels(score, np.ones(400, int))


def test_a_few_clicks_per_class_map_separable_clusters():
    x, lab = _clusters(k=3, noise=0.05)
    clicks = {f"class{c}": [tuple(p) for p in np.argwhere(lab == c)[::97][:3]] for c in range(3)}
    for probe in ("knn1", "linear"):
        got, names = few_click_map(x, clicks, probe)
        assert names == ["class0", "class1", "class2"]
        assert (got == lab).mean() > 0.98, probe
    with pytest.raises(ValueError, match="two classes"):
        few_click_map(x, {"only": [(0, 0)]})


@pytest.mark.parametrize("gap_fill", ["zero", "raw"])
def test_period_summariser_equals_the_full_model_and_needs_one_encoder_pass(monkeypatch, gap_fill):
    from dataclasses import replace

    from aef_lit.conventions import get_config
    from aef_lit.data import SourceFrames, synthetic_sample
    from aef_lit.data.preprocess import collate
    from aef_lit.model import build_model, embed

    torch.manual_seed(0)
    model = build_model(get_config("tiny", gap_fill=gap_fill)).eval()
    specs = model.cfg.input_sources
    s = synthetic_sample(specs, height=32, width=32, seed=3)
    if gap_fill == "raw":  # radiance under the synthetic clouds, which the raw model reads
        fr = s.sources["s2"]
        s = replace(s, sources={**s.sources, "s2": SourceFrames(fr.values, fr.times, fr.valid, fr.meta, fr.name,
                                                                 cloud_values=fr.values + 0.3)})
        assert collate([s], specs)["s2"].cloud.abs().sum() > 0
    ps = PeriodSummariser(model, s, tile=16)
    calls = []
    orig = model.encode
    monkeypatch.setattr(model, "encode", lambda b: calls.append(1) or orig(b))
    t = ps.times
    periods = [(t[0], t[-1] + 1), (t[0], t[len(t) // 2])]
    got = [ps(p) for p in periods]
    assert not calls  # only the summariser ran
    tile = s.crop(16, 0, 16, 16)  # the tile at row 16, col 0, embedded directly with all its frames
    batch = collate([tile], [sp for sp in specs if sp.name in tile.sources])
    for p, g in zip(periods, got):
        ref = embed(model, batch, torch.tensor([p], dtype=torch.float64))[0].numpy()
        assert np.allclose(g[:, 16:, :16], ref, atol=1e-4)
    assert not np.allclose(got[0], got[1])
    assert np.isnan(ps((t[-1] + 10, t[-1] + 20))).all()
    with pytest.raises(ValueError, match="t_e > t_s"):
        ps((5.0, 5.0))
