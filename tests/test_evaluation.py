"""aef_lit.evaluation: tasks, methods, leaks, the evaluation loop, rasters and the aef-eval CLI."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import rasterio
import torch

from aef_lit import evaluation as E
from aef_lit.conventions import LANDCOVER, WORLDCOVER_CLASSES, get_config
from aef_lit.data import GREENEARTHNET_S2, Sample, SourceFrames, synthetic_sample
from aef_lit.model import build_model
from aef_lit.training import PRETRAINED


def _synthetic_task(seed=0, size=96, name="synthetic", split="blocks") -> E.Task:
    s = synthetic_sample((GREENEARTHNET_S2, LANDCOVER), height=size, width=size, seed=seed, n_frames={"s2": 10})
    lc = s.sources["landcover"]
    lab = np.where(lc.valid[0], lc.values[0, 0], -1).astype(np.int64)
    t0, t1 = s.time_span()
    return E.Task(name, "classification", [E.select_inputs(s, (GREENEARTHNET_S2,))], [lab], [(t0, t1 + 1.0)],
                  ["here"], split, WORLDCOVER_CLASSES, label_source="landcover")


def _write_tif(path, values, sample, dtype="float32", nodata=None):
    g = sample.grid
    with rasterio.open(path, "w", driver="GTiff", height=g.height, width=g.width, count=values.shape[0],
                       dtype=dtype, crs=g.rio_crs, transform=g.affine, nodata=nodata) as dst:
        dst.write(values.astype(dtype))
    return path


def test_dequantise_aef_matches_the_product_formula():
    q = np.array([-128, -127, -1, 0, 1, 64, 127], np.int8)
    v = E.dequantise_aef(q)
    assert np.isnan(v[0])
    assert np.allclose(v[1:], np.sign(q[1:]) * (q[1:].astype(float) / 127.5) ** 2)
    assert v[3] == 0.0 and v[-1] < 1.0


def test_pixel_table_keeps_labelled_observed_pixels_only():
    task = _synthetic_task()
    s = task.samples[0]
    fr = s.sources["s2"]
    valid = fr.valid.copy()
    valid[:, :5, :] = False  # the first 5 rows never clear
    s2 = SourceFrames(fr.values, fr.times, valid, name="s2")
    lab = task.labels[0].copy()
    lab[10, :] = -1  # row 10 unlabelled
    t = E.Task(task.name, task.kind, [Sample(s.site, s.grid, {"s2": s2}, s.specs)], [lab], task.periods,
               task.groups, task.split, task.classes)
    table = E.pixel_table(t)
    assert table.row.min() >= 5 and 10 not in set(table.row.tolist())
    assert len(table) == int(((lab >= 0) & valid.any(0)).sum())
    assert np.all(table.y == lab[table.row, table.col])
    # positions in metres: neighbouring pixels 10 m apart (the synthetic grid is 10 m)
    i = np.flatnonzero((table.row == 20) & (table.col == 20))[0]
    j = np.flatnonzero((table.row == 20) & (table.col == 21))[0]
    assert np.isclose(np.linalg.norm(table.xy[i] - table.xy[j]), 10.0, rtol=0.01)


def test_an_embedding_that_knows_the_label_is_perfect_and_noise_is_chance():
    task = _synthetic_task()
    lab = task.labels[0]
    onehot = lambda s, p: np.eye(8, dtype=np.float32)[np.maximum(lab, 0)].transpose(2, 0, 1)  # noqa: E731
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(16, *lab.shape)).astype(np.float32)
    methods = {"oracle": E.CallableMethod(onehot, "oracle"), "noise": E.CallableMethod(lambda s, p: noise, "noise")}
    res = E.evaluate(methods, [task], folds=8, progress=False, probes=("knn1", "linear"), shots=(10, "max"),
                     split="pixels")  # every class in every pool: a blocked fold may miss one
    summ = res.summary
    oracle = summ[summ["method"] == "oracle"]["balanced_accuracy"]
    assert (oracle == 1.0).all()
    k = len(res.tasks["synthetic"]["classes"])
    for _, r in summ[summ["method"] == "noise"].iterrows():
        assert abs(r["balanced_accuracy"] - 1 / k) < max(r["balanced_accuracy_ci"], 0.03) + 0.03, r.to_dict()


def test_a_raster_scores_exactly_like_the_features_it_holds(tmp_path):
    task = _synthetic_task(seed=1)
    s = task.samples[0]
    feats = np.random.default_rng(1).normal(size=(6, *s.grid.shape)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=0, keepdims=True)
    path = _write_tif(tmp_path / "emb.tif", feats, s)
    q = np.clip(np.round(np.sign(feats) * np.sqrt(np.abs(feats)) * 127.5), -127, 127)
    qpath = _write_tif(tmp_path / "aef.tif", q, s, dtype="int8", nodata=-128)
    methods = {"mem": E.CallableMethod(lambda s_, p: feats, "mem"), "file": E.RasterMethod(path),
               "aef": E.RasterMethod(qpath)}
    rows = E.evaluate(methods, [task], folds=4, progress=False).rows
    by = {m: [r["balanced_accuracy"] for r in rows if r["method"] == m] for m in methods}
    assert by["mem"] == by["file"]
    # the int8 file holds the same vectors to quantisation precision: same scores almost everywhere
    assert np.mean(np.isclose(by["mem"], by["aef"], atol=0.02)) > 0.8
    assert np.allclose(E.read_embedding_raster(qpath)[0], feats, atol=0.02)


def test_pixels_an_embedding_does_not_cover_are_left_out_for_every_method(tmp_path):
    task = _synthetic_task(seed=2)
    s = task.samples[0]
    feats = np.random.default_rng(2).normal(size=(4, *s.grid.shape)).astype(np.float32)
    feats[:, :, :20] = np.nan  # the raster covers only the right part of the site
    path = _write_tif(tmp_path / "part.tif", feats, s, nodata=None)
    res = E.evaluate({"part": E.RasterMethod(path), "xy": E.BaselineMethod("xy")}, [task], folds=2, progress=False)
    full = len(E.pixel_table(task))
    assert res.tasks[task.name]["pixels"] < full
    n_test = {m: {r["n_test"] for r in res.rows if r["method"] == m} for m in ("part", "xy")}
    assert n_test["part"] == n_test["xy"]


def test_leaks_follow_the_training_sites_and_targets():
    meta = json.loads((PRETRAINED / "config.json").read_text())
    assert E.training_targets(meta) == {"portugal": {"dem", "landcover"}, "hungary": {"dem", "landcover"}}
    task = _synthetic_task()
    for place, leaks in (("portugal", True), ("hungary", True), ("sweden", False)):
        t = E.Task(task.name, task.kind, task.samples, task.labels, task.periods, [place], task.split, task.classes,
                   label_source="landcover")
        assert bool(E.leak_reason(t, meta)) is leaks
    no_source = E.Task(task.name, task.kind, task.samples, task.labels, task.periods, ["hungary"], task.split)
    assert E.leak_reason(no_source, meta) == ""
    # GeoTIFF-only sites carry no land cover; multisite names map onto places
    multi = {**meta, "train_config": {**meta["train_config"], "data": "multisite",
                                      "sites": ["portugal_geotiff", "slovenia", "belgium"]}}
    assert E.training_targets(multi) == {"portugal": set(), "slovenia": {"dem", "landcover"}, "belgium": {"dem"}}
    # a model without a landcover target cannot leak it
    no_lc = {**meta, "model_config": {**meta["model_config"], "sources": [
        s for s in meta["model_config"]["sources"] if s["name"] != "landcover"]}}
    assert E.training_targets(no_lc)["hungary"] == {"dem"}


def test_embed_sample_tiles_independently_and_pads_any_size():
    torch.manual_seed(0)
    model = build_model(get_config("tiny", sources=(GREENEARTHNET_S2,))).eval()
    s = E.select_inputs(synthetic_sample((GREENEARTHNET_S2,), height=32, width=32, seed=3), (GREENEARTHNET_S2,))
    period = (s.time_span()[0], s.time_span()[1] + 1)
    whole = E.embed_sample(model, s, period, tile=16)
    corner = E.embed_sample(model, s.crop(16, 16, 16, 16), period, tile=16)
    assert np.allclose(whole[:, 16:, 16:], corner, atol=1e-5)  # a tile sees only itself
    odd = E.embed_sample(model, s.crop(0, 0, 20, 18), period, tile=16)
    assert odd.shape == (64, 20, 18) and np.allclose((odd ** 2).sum(0), 1, atol=1e-4)
    assert np.allclose(odd[:, :16, :16], whole[:, :16, :16], atol=1e-5)
    # a lone pixel is the centre of a tile that repeats it
    px = s.crop(5, 7, 1, 1)
    one = E.ModelMethod(model, tile=16)([px], [period])[0]
    tiled = Sample(px.site, s.grid.crop(0, 0, 16, 16), {"s2": SourceFrames(
        np.repeat(np.repeat(px.sources["s2"].values, 16, 2), 16, 3), px.sources["s2"].times,
        np.repeat(np.repeat(px.sources["s2"].valid, 16, 1), 16, 2), name="s2")}, px.specs)
    assert np.allclose(one[:, 0, 0], E.embed_sample(model, tiled, period, tile=16)[:, 8, 8], atol=1e-5)


def test_the_evaluation_shows_a_raw_model_its_clouds_and_no_other_model():
    """embed_sample carries the radiance under clouds to a gap_fill="raw" model, tile by tile; a
    "zero" model's embeddings do not change with it. (A lone labelled pixel never has a cloudy
    frame: a frame with no valid pixel is dropped.)"""
    cfg = get_config("tiny", sources=(GREENEARTHNET_S2,))
    torch.manual_seed(0)
    zero = build_model(cfg).eval()
    raw = build_model(cfg.replace(gap_fill="raw")).eval()
    raw.load_state_dict(zero.state_dict())
    s = E.select_inputs(synthetic_sample((GREENEARTHNET_S2,), height=32, width=32, seed=3), (GREENEARTHNET_S2,))
    fr = s.sources["s2"]
    valid = fr.valid.copy()
    valid[1, :8, :8] = False  # a cloud over part of the first tile's second frame (a frame clear on
    values = fr.values.copy()  # less than 5 % of a tile is not read for that tile, cloud or not)
    measured = np.zeros_like(values)
    measured[1, :, :8, :8] = values[1, :, :8, :8] + 0.3  # what the sensor saw there
    cloudy = Sample(s.site, s.grid, {"s2": SourceFrames(values.copy(), fr.times, valid, name="s2",
                                                        cloud_values=measured)}, s.specs)
    plain = Sample(s.site, s.grid, {"s2": SourceFrames(values.copy(), fr.times, valid, name="s2")}, s.specs)
    period = (s.time_span()[0], s.time_span()[1] + 1)
    for m, changes in ((zero, False), (raw, True)):
        a, b = E.embed_sample(m, cloudy, period, tile=16), E.embed_sample(m, plain, period, tile=16)
        assert np.allclose(a[:, 16:, 16:], b[:, 16:, 16:], atol=1e-6), "a tile without cloud is unchanged"
        assert (not np.allclose(a[:, :16, :16], b[:, :16, :16], atol=1e-4)) == changes


def test_untrained_models_are_seeded():
    cfg = get_config("tiny", sources=(GREENEARTHNET_S2,))
    a, b, c = E.untrained_model(cfg, 0), E.untrained_model(cfg, 0), E.untrained_model(cfg, 1)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_compare_gives_verdicts_from_paired_differences():
    task = _synthetic_task(seed=4)
    lab = task.labels[0]
    good = np.eye(8, dtype=np.float32)[np.maximum(lab, 0)].transpose(2, 0, 1)
    noise = np.random.default_rng(0).normal(size=(8, *lab.shape)).astype(np.float32)
    res = E.evaluate({"good": E.CallableMethod(lambda s, p: good, "good"),
                      "noise": E.CallableMethod(lambda s, p: noise, "noise"),
                      "noise2": E.CallableMethod(lambda s, p: noise, "noise2")}, [task], folds=5, progress=False)
    assert E.compare(res, "good").iloc[0]["verdict"] == "better"
    assert E.compare(res, "noise", against=["good"]).iloc[0]["verdict"] == "worse"
    tie = E.compare(res, "noise", against=["noise2"]).iloc[0]
    assert tie["difference"] == 0.0 and tie["verdict"] == "tie"


def test_markdown_table_marks_leaks_and_best(tmp_path):
    task = _synthetic_task(seed=5)
    task.groups = ["hungary"]  # a training site of the shipped model, whose landcover it decoded
    res = E.evaluate({"xy": E.BaselineMethod("xy"), "composite": E.BaselineMethod("composite")}, [task], folds=3,
                     progress=False, model_meta=json.loads((PRETRAINED / "config.json").read_text()))
    md = res.markdown("knn3")
    assert "| synthetic† | blocks | xy |" in md and "**" in md and "† synthetic: leak" in md
    out = res.to_json(tmp_path / "r.json")
    back = json.loads(out.read_text())
    assert len(back["rows"]) == len(res.rows) and back["tasks"]["synthetic"]["pixels"] > 0
    assert E.EvalResult.from_json(out).markdown("knn3") == md


def test_bad_tasks_and_methods_are_refused():
    with pytest.raises(ValueError, match="unknown task"):
        E.build_task("mars_craters")
    with pytest.raises(ValueError, match="unknown baseline"):
        E.BaselineMethod("median_9x9")
    with pytest.raises(ValueError, match="no methods"):
        E.evaluate({}, [_synthetic_task()], progress=False)
    with pytest.raises(FileNotFoundError):
        E.RasterMethod("/nonexistent/embedding.tif")


def test_cli_help_text_on_every_flag():
    parser = E.build_eval_parser()
    for action in parser._actions:
        if action.dest != "help":
            assert action.help and len(action.help) > 10, action.dest


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "mars"], "unknown task"),
    (["--shots", "0"], "--shots"),
    (["--probes", "svm"], "unknown probe"),
    (["--labels", "x.tif"], "give both"),
    (["--folds", "1"], "at least 2"),
    (["--embeddings", "/no/such.tif"], "no such file"),
    (["--baselines", "median"], "unknown baseline"),
])
def test_cli_refuses_bad_input_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as err:
        E.main(argv)
    assert message in str(err.value)


def test_cli_scores_an_embedding_raster_on_a_label_raster(tmp_path, capsys):
    task = _synthetic_task(seed=6, size=64)
    s = task.samples[0]
    lab = task.labels[0]
    feats = np.eye(8, dtype=np.float32)[np.maximum(lab, 0)].transpose(2, 0, 1)
    emb = _write_tif(tmp_path / "emb.tif", feats + 0.01 * np.random.default_rng(0).normal(size=feats.shape), s)
    labels = _write_tif(tmp_path / "labels.tif", np.where(lab >= 0, lab, 255)[None], s, dtype="uint8", nodata=255)
    out = tmp_path / "res.json"
    assert E.main(["--embeddings", str(emb), "--labels", str(labels), "--folds", "3", "--out", str(out),
                   "--no-progress", "--shots", "10", "--split", "pixels"]) == 0
    printed = capsys.readouterr().out
    assert "| emb |" in printed and "| xy |" in printed
    res = json.loads(out.read_text())
    emb_scores = [r["balanced_accuracy"] for r in res["rows"] if r["method"] == "emb"]
    assert min(emb_scores) > 0.95


def test_update_card_puts_the_table_into_the_model_folder(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(PRETRAINED, folder)
    res = E.evaluate({"xy": E.BaselineMethod("xy")}, [_synthetic_task(seed=7)], folds=2, progress=False)
    E.update_card(folder, res)
    card = (folder / "MODEL_CARD.md").read_text()
    assert "## Sparse-label probes" in card and "| synthetic | blocks | xy |" in card  # no model meta: no leak
    assert "| this model |" in card  # the rest of the card is still there
    assert json.loads((folder / "config.json").read_text())["probes"]["probe"] == "knn3"


@pytest.mark.real
def test_every_real_task_builds_for_the_shipped_inputs(eo_real):
    specs = (GREENEARTHNET_S2,)
    for name in E.TASKS:
        task = E.build_task(name, specs, eo_real)
        table = E.pixel_table(task)
        assert len(table) >= 40, name
        if task.kind == "classification":
            assert len(np.unique(table.y)) >= 2, name
            counts = np.bincount(table.y)
            assert counts[counts > 0].min() >= (E.MIN_CLASS_POINTS if task.split == "points" else 10), name
        for s, p in zip(task.samples, task.periods):
            assert set(s.sources) == {"s2"} and s.specs["s2"].bands == specs[0].bands
            t = s.sources["s2"].times
            assert ((t >= p[0]) & (t < p[1])).any(), name
    wc = E.build_task("worldcover_sites", specs, eo_real)
    assert len(wc.samples) == 3 and wc.split == "sites"


def test_representation_stats_see_rank_and_collapse():
    rng = np.random.default_rng(0)
    iso = rng.normal(size=(3000, 16))
    st = E.representation_stats(iso)
    assert 14.5 < st["effective_rank"] <= 16 and st["mean_abs_cos"] < 0.3
    line = rng.normal(size=(3000, 1)) * np.ones((1, 16)) + 5.0  # rank 1, all pointing one way
    st = E.representation_stats(line)
    assert st["effective_rank"] < 1.01 and st["top5_variance"] > 0.999 and st["mean_abs_cos"] > 0.95


def test_neighbour_overlap_is_one_for_itself_and_small_for_unrelated():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(1500, 8))
    assert E.neighbour_overlap(a, a) == 1.0
    assert E.neighbour_overlap(a, a * 3.0 + 1.0) == 1.0  # scale and shift keep neighbourhoods
    assert E.neighbour_overlap(a, rng.normal(size=(1500, 8))) < 0.05
    with pytest.raises(ValueError, match="rows"):
        E.neighbour_overlap(a, a[:10])


def test_method_features_are_cached_per_method_and_task(tmp_path):
    task = _synthetic_task(seed=8, size=32)
    calls = []
    feats = np.random.default_rng(8).normal(size=(3, 32, 32)).astype(np.float32)

    def fn(s, p):
        calls.append(s.site)
        return feats

    m = E.CallableMethod(fn, "counted")
    first = E.method_features(m, task, tmp_path)
    again = E.method_features(m, task, tmp_path)
    assert len(calls) == 1 and np.array_equal(first[0], again[0]) and np.array_equal(first[0], feats)
    E.method_features(E.CallableMethod(fn, "other"), task, tmp_path)  # another method: its own entry
    assert len(calls) == 2
    for no_cache in (None, ""):
        E.method_features(m, task, no_cache)
    assert len(calls) == 4 and len(list(tmp_path.glob("*.npz"))) == 2


def test_lone_pixels_reach_a_raw_model_with_their_cloud_field():
    """embed_pixels repeats a labelled pixel over one tile: the radiance-under-cloud field (all zero
    for a pixel whose cloudy frames were dropped) is repeated with it, so a gap_fill="raw" model
    embeds the pixel as embed_sample embeds the same pixel repeated over a tile."""
    cfg = get_config("tiny", sources=(GREENEARTHNET_S2,)).replace(gap_fill="raw")
    torch.manual_seed(0)
    raw = build_model(cfg).eval()
    s = E.select_inputs(synthetic_sample((GREENEARTHNET_S2,), height=32, width=32, seed=3), (GREENEARTHNET_S2,))
    period = (s.time_span()[0], s.time_span()[1] + 1)
    fr = s.crop(5, 7, 1, 1).sources["s2"]
    px = Sample(s.site, s.grid.crop(5, 7, 1, 1), {"s2": SourceFrames(
        fr.values.copy(), fr.times, fr.valid.copy(), name="s2", cloud_values=np.zeros_like(fr.values))}, s.specs)
    one = E.embed_pixels(raw, [px], [period], 16)[0]
    rep = np.repeat(np.repeat(fr.values, 16, 2), 16, 3)
    tiled = Sample(s.site, s.grid.crop(0, 0, 16, 16), {"s2": SourceFrames(
        rep, fr.times, np.repeat(np.repeat(fr.valid, 16, 1), 16, 2), name="s2",
        cloud_values=np.zeros_like(rep))}, s.specs)
    assert np.allclose(one[:, 0, 0], E.embed_sample(raw, tiled, period, tile=16)[:, 8, 8], atol=1e-5)
