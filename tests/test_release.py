"""Tests of chapter 22's release: held-out reconstruction, the model card, the shipped model."""
from __future__ import annotations

import json
import math

import pytest
import torch

from aef_lit.conventions import get_config
from aef_lit.training import TrainConfig, step_generator


def test_model_card_describes_the_data_the_run_used():
    from aef_lit.training import model_card

    facts = {"steps": 10, "train_seconds": 60.0, "hardware": "cpu", "params": 1000, "notes": "",
             "final_terms": dict.fromkeys(("total", "reconstruction", "uniformity", "consistency", "text"), 0.1),
             "heldout": {"sites": ["sweden"], "rows": 8, "pixels": 100, "model": 0.2, "model_refl": 0.01,
                         "temporal_mean": 0.3, "temporal_mean_refl": 0.02, "nearest_frame": 0.25,
                         "nearest_frame_refl": 0.015}}
    mcfg = get_config("tiny")
    gen = model_card(mcfg, TrainConfig(data="greenearthnet", sites=("portugal",)), facts)
    multi = model_card(mcfg, TrainConfig(data="multisite", sites=("portugal", "belgium")), facts)
    assert "GreenEarthNet minicubes portugal" in gen and "B08 for B8A" not in gen
    assert "multisite" in multi and "portugal, belgium" in multi and "B08 for B8A" in multi
    assert "--data multisite --sites portugal belgium" in multi, "the reproduce line names the data"
    assert "inside the period" not in gen and "whole span" not in gen, "older facts: no rows for missing scores"
    newer = {**facts, "heldout": {**facts["heldout"], "period_mean": 0.1234, "period_mean_refl": 0.0101},
             "heldout_row_period": {**facts["heldout"], "model": 0.1987, "temporal_mean": 0.2468}}
    card = model_card(mcfg, TrainConfig(data="greenearthnet", sites=("portugal",)), newer)
    assert "| per-pixel mean of the clear input frames inside the period | 0.1234 | 0.0101 |" in card
    assert "whole span" in card and "this model 0.1987, temporal mean 0.2468" in card
    assert card.index("inside the period") < card.index("nearest clear input frame"), "one table, in order"
    # what reached the model is said as it was: targets, captions, the text term
    plain = model_card(mcfg, TrainConfig(data="greenearthnet", sites=("portugal",), targets=("none",),
                                         captions="row", text=False), facts)
    assert "no evaluated label reached the model" in plain and "WorldCover as target-only" not in plain
    assert "--targets none" in plain and "--captions row" in plain and "--no-text" in plain
    assert "ESA WorldCover as target-only sources" in gen and "--captions" not in gen and "--no-text" not in gen
    multi_plain = model_card(mcfg, TrainConfig(data="multisite", sites=("portugal",), targets=()), facts)
    assert "No target-only source" in multi_plain and "DEM and land cover are target-only" in multi


# --- measuring held-out reconstruction -------------------------------------------------------------
@pytest.fixture(scope="module")
def frame_index_batch():
    """A synthetic batch whose S2 frame k holds the value k everywhere, fully clear."""
    from aef_lit.training.sampling import TileDataset, load_sites

    ds = TileDataset(load_sites("synthetic", ("a", "b"), seed=0, synthetic_size=48), tile=16, frames=6, seed=3)
    batch = ds.collate([ds[k] for k in range(4)])
    sb = batch["s2"]
    x = torch.arange(sb.x.shape[1], dtype=torch.float32)[None, :, None, None, None].expand_as(sb.x).clone()
    batch["s2"] = sb.replace(x=x, weight=sb.frame_mask[..., None, None].float().expand_as(sb.weight).clone())
    return batch


def _tiny_model():
    from aef_lit.conventions import DEM, LANDCOVER
    from aef_lit.data import GREENEARTHNET_S2
    from aef_lit.model import build_model

    torch.manual_seed(0)
    return build_model("tiny", tile=16, sources=(GREENEARTHNET_S2, DEM, LANDCOVER))


@pytest.mark.parametrize("period", ["random", "row"])
def test_heldout_baselines_use_the_remaining_frames_only(frame_index_batch, period):
    """The baselines are computed from the input frames, never from the held-out frame itself."""
    from aef_lit.training import heldout_errors

    batch = frame_index_batch
    res = heldout_errors(_tiny_model(), batch, generator=step_generator(7, 0), period=period)
    sb, truth = batch["s2"], res["truth"][:, 0, 0, 0]  # the held-out frame's index, per row
    assert res["pixels"] > 0
    errors = [k + s for k in ("model", "temporal_mean", "period_mean", "nearest_frame") for s in ("", "_refl")]
    assert all(isinstance(res[k], float) and math.isfinite(res[k]) for k in errors), "summed errors are plain floats"
    restricted = 0
    for b in range(sb.x.shape[0]):
        k = int(truth[b])
        inputs = [j for j in range(sb.x.shape[1]) if sb.frame_mask[b, j] and j != k]
        assert k not in inputs and abs(sb.t[b, k] - res["t"][b]) < 1e-9
        assert res["mean"][b, 0, 0, 0] == pytest.approx(sum(inputs) / len(inputs))
        nearest = min(inputs, key=lambda j: abs(float(sb.t[b, j] - sb.t[b, k])))
        assert res["nearest"][b, 0, 0, 0] == nearest
        t0, t1 = res["period"][b].tolist()
        assert t0 <= float(sb.t[b, k]) < t1
        inside = [j for j in inputs if t0 <= float(sb.t[b, j]) < t1] or inputs
        restricted += inside != inputs
        assert res["mean_in_period"][b, 0, 0, 0] == pytest.approx(sum(inside) / len(inside))
        if period == "row":  # the row's whole span: every frame inside, so the two means agree
            assert t0 <= float(sb.t[b][sb.frame_mask[b]].min()) and float(sb.t[b][sb.frame_mask[b]].max()) < t1
            assert res["mean_in_period"][b, 0, 0, 0] == pytest.approx(res["mean"][b, 0, 0, 0])
    assert (restricted > 0) == (period == "random"), "random periods should leave some input frames out"


def test_heldout_periods_differ_and_bad_period_is_refused(frame_index_batch):
    from aef_lit.training import heldout_errors

    model = _tiny_model()
    rand = heldout_errors(model, frame_index_batch, generator=step_generator(7, 0))
    row = heldout_errors(model, frame_index_batch, generator=step_generator(7, 0), period="row")
    assert torch.equal(rand["truth"], row["truth"]), "the same frames are held out under both periods"
    assert (row["period"][:, 1] - row["period"][:, 0] >= 0).all()
    assert not torch.equal(rand["period"], row["period"]) and not torch.allclose(rand["pred"], row["pred"])
    with pytest.raises(ValueError, match="period"):
        heldout_errors(model, frame_index_batch, period="year")


def test_calendar_shift_probe_moves_the_model_not_the_baselines():
    """`shift_days` changes only the dates: the baselines (which never read a date's value
    beyond ordering) stay exactly the same, a model that reads timecodes does not."""
    from aef_lit.training import evaluate_heldout

    model = _tiny_model()
    plain = evaluate_heldout(model, "synthetic", ("a",), rows=8, batch_size=8)
    moved = evaluate_heldout(model, "synthetic", ("a",), rows=8, batch_size=8, shift_days=365.0)
    assert moved["shift_days"] == 365.0 and plain["pixels"] == moved["pixels"] > 0
    for k in ("temporal_mean", "period_mean", "nearest_frame"):
        assert moved[k] == pytest.approx(plain[k], rel=1e-6), k
    assert moved["model"] != pytest.approx(plain["model"], rel=1e-6), "the untrained model reads the calendar"


# --- the shipped model ------------------------------------------------------------------------
def test_shipped_model_files_are_small_and_safe():
    from aef_lit.training import PRETRAINED

    if not (PRETRAINED / "model.safetensors").exists():
        pytest.skip("no shipped model yet")
    size = sum(f.stat().st_size for f in PRETRAINED.iterdir())
    assert size < 8e6, f"the shipped model folder is {size / 1e6:.1f} MB"
    meta = json.loads((PRETRAINED / "config.json").read_text())
    assert {"model_config", "train_config", "steps", "final_terms", "heldout"} <= set(meta)
    place = lambda site: site.removesuffix("_geotiff")  # noqa: E731 - one place, two products
    held, trained_on = meta["heldout"]["sites"], meta["train_config"]["sites"]
    assert held and not {place(s) for s in held} & {place(s) for s in trained_on}, \
        f"held-out {held} overlaps the training sites {trained_on}"
    card = (PRETRAINED / "MODEL_CARD.md").read_text()
    assert "temporal mean" in card and "steps" in card


@pytest.mark.real
def test_shipped_model_loads_and_embeds_a_real_tile(eo_real):
    from aef_lit.training import PRETRAINED, load_pretrained

    if not (PRETRAINED / "model.safetensors").exists():
        pytest.skip("no shipped model yet")
    from aef_lit.model import embed
    from aef_lit.training.sampling import training_dataset

    model, cfg = load_pretrained()
    assert not model.training
    ds = training_dataset("greenearthnet", ("sweden",), tile=cfg.tile, frames=8, seed=5)
    batch = ds.collate([ds[0], ds[1]])
    t = batch["s2"].t
    periods = torch.stack([t.min(1).values, t.max(1).values + 1], -1)[:, None]
    with torch.no_grad():
        e = embed(model, batch, periods)
    assert e.shape[0] == 2 and e.shape[-2:] == (cfg.tile, cfg.tile) and cfg.embed_dim in e.shape
    assert torch.isfinite(e).all()
    assert torch.allclose(e.norm(dim=e.shape.index(cfg.embed_dim)), torch.ones(()), atol=1e-4)


HELD_OUT_TASKS = ("worldcover_sweden", "slovenia_lulc", "flanders_crops")  # sites no shipped model trained on


@pytest.mark.real
@pytest.mark.xfail(reason="open problem (issue 14): at sites it never saw, the shipped model's 10-shot kNN-3 "
                          "embeddings tie or lose to a designed baseline, and no lever model measured does better "
                          "(lab notes: training levers I and II)", strict=True,
                   raises=AssertionError)  # only the criterion may fail: an import or type error is a bug
def test_shipped_model_beats_every_baseline_at_three_held_out_sites(eo_real):
    """Issue 14's criterion, measured live with the evaluation (chapter 25): at each of three sites
    outside the model's training, 10-shot kNN-3 balanced accuracy beats every designed baseline by
    at least 0.05 with the paired 95 % interval above 0."""
    from aef_lit import evaluation as E
    from aef_lit.evaluation.probes import paired_difference
    from aef_lit.training import PRETRAINED, load_pretrained

    if not (PRETRAINED / "model.safetensors").exists():
        pytest.skip("no shipped model yet")
    meta = json.loads((PRETRAINED / "config.json").read_text())
    assert not {"sweden", "slovenia", "flanders"} & set(meta["train_config"]["sites"])
    model, _ = load_pretrained()
    methods = E.default_methods(model, "shipped", untrained_seeds=())
    res = E.evaluate(methods, list(HELD_OUT_TASKS), folds=20, shots=[10], probes=["knn3"], progress=False)
    assert {r["method"] for r in res.rows} >= set(methods)
    for task in HELD_OUT_TASKS:
        for b in (m for m in methods if m != "shipped"):
            if not any(r["method"] == b and r["task"] == task for r in res.rows):
                continue  # not applicable at this site (e.g. harmonics on five dates)
            d, h = paired_difference(res.rows, "shipped", b, task=task, probe="knn3", shots="10")
            assert d - h > 0 and d >= 0.05, (task, b, round(d, 3), round(h, 3))


@pytest.mark.real
@pytest.mark.xfail(reason="open problem (issue 5): the CPU-trained model does not yet beat the per-pixel temporal "
                          "mean on its held-out site (8 % worse on the cube's grid, 1 % on the 10 m grid; the best "
                          "model trained for the new site ties it, 1.5 % better at 10 m, and loses its training sites; "
                          "see MODEL_CARD.md, chapter 22 and the lab notes)", strict=True,
                   raises=AssertionError)  # only the criterion may fail: an import or type error is a bug
def test_shipped_model_beats_the_temporal_mean_on_an_unseen_site(eo_real):
    """Issue 5's criterion, on the held-out site the card names (never among the training sites)."""
    from aef_lit.training import PRETRAINED, evaluate_heldout, load_pretrained

    if not (PRETRAINED / "model.safetensors").exists():
        pytest.skip("no shipped model yet")
    meta = json.loads((PRETRAINED / "config.json").read_text())
    held = meta["heldout"]["sites"]
    model, _ = load_pretrained()
    scores = evaluate_heldout(model, meta["heldout"]["data"], tuple(held), rows=64, frames=8)
    assert scores["pixels"] > 5000
    assert scores["model"] < 0.97 * scores["temporal_mean"], scores  # clearly better, not a tie
