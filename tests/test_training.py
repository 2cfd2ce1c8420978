"""Tests of aef_lit.training: schedule, config/CLI, checkpoints, resume, NaN guard, DDP, kill/resume."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from aef_lit.conventions import get_config
from aef_lit.training import (
    CHECKPOINT,
    METRICS,
    MetricsLog,
    NonFiniteLossError,
    TrainConfig,
    build_parser,
    config_from_args,
    load_checkpoint,
    lr_at,
    model_config_from_json,
    model_config_to_json,
    read_metrics,
    save_checkpoint,
    step_generator,
    train,
    warmup_steps,
)

ROOT = Path(__file__).resolve().parents[1]


# --- the schedule (AEF_NOTES §8; the port's constant learning rate, §12) --------------------------
def test_schedule_shape():
    N, peak = 100_000, 1e-4
    assert lr_at(0, N, peak, 0.01) == 0.0
    assert lr_at(N, N, peak, 0.01) == 0.0
    assert lr_at(1000, N, peak, 0.01) == peak
    assert lr_at(500, N, peak, 0.01) == pytest.approx(peak / 2)
    assert lr_at(50_500, N, peak, 0.01) == pytest.approx(peak / 2)
    lrs = [lr_at(s, 300, 1.0, 0.01) for s in range(301)]
    assert max(lrs) == 1.0 and lrs.index(1.0) == warmup_steps(300, 0.01) == 3
    assert len(set(lrs)) > 100, "not constant"


# --- config, files, CLI -------------------------------------------------------------------------
def test_config_roundtrip_and_refusals(tmp_path):
    cfg = TrainConfig(steps=10, sites=("sweden",), lr=3e-4)
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg
    (tmp_path / "a.yaml").write_text("steps: 5\nsites: [portugal]\nlr: 0.001\n")
    assert TrainConfig.from_file(tmp_path / "a.yaml", steps=7) == TrainConfig(steps=7, sites=("portugal",), lr=1e-3)
    with pytest.raises(TypeError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="checkpoint every step"):
        TrainConfig(checkpoint_every=0)
    with pytest.raises(ValueError, match="multiple of 16"):
        TrainConfig(tile=20)


def test_cli_flags_override_file(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"steps": 5, "batch_size": 3, "bf16": True}))
    cfg, _ = config_from_args(["--config", str(tmp_path / "run.json"), "--steps", "9", "--no-bf16",
                               "--grad_accum", "2", "--sites", "portugal", "sweden"])
    assert cfg == TrainConfig(steps=9, batch_size=3, bf16=False, grad_accum=2, sites=("portugal", "sweden"))
    assert "--checkpoint-every" in build_parser().format_help()


def test_model_overrides_change_the_built_model_and_refuse_bad_json():
    from aef_lit.data import GREENEARTHNET_S2
    from aef_lit.training import build_model_and_objective

    cfg, _ = config_from_args(["--model-overrides", '{"d_precision": 32, "decoder_hidden": 48}', "--tile", "16"])
    mcfg, model, _ = build_model_and_objective(cfg, (GREENEARTHNET_S2,))
    base, base_model, _ = build_model_and_objective(TrainConfig(tile=16), (GREENEARTHNET_S2,))
    assert (mcfg.d_precision, mcfg.decoder_hidden, mcfg.tile) == (32, 48, 16)
    tiny = get_config("tiny")
    assert (base.d_precision, base.decoder_hidden) == (tiny.d_precision, tiny.decoder_hidden)
    assert model.summariser.pool.key.in_features == 32
    assert sum(p.numel() for p in model.parameters()) > sum(p.numel() for p in base_model.parameters())
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg  # survives the checkpoint's JSON
    for bad, msg in (('{"d_precison": 3}', "unknown or reserved"), ('{"tile": 32}', "reserved"),
                     ("[64]", "JSON object"), ("{oops", "not valid JSON")):
        with pytest.raises(ValueError, match=msg):
            TrainConfig(model_overrides=bad)


# --- checkpoints ----------------------------------------------------------------------------------
def _net_and_opt():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(2, 3)).sum().backward()
    opt.step()
    return net, opt


def test_checkpoint_weights_only_and_atomic(tmp_path, monkeypatch):
    net, opt = _net_and_opt()
    cfg = TrainConfig()
    p = save_checkpoint(tmp_path / CHECKPOINT, net, opt, 5, cfg, get_config("tiny"))
    ck = torch.load(p, weights_only=True)  # no arbitrary code on load
    assert ck["step"] == 5 and ck["data"]["next_step"] == 5
    assert model_config_from_json(ck["model_config"]) == get_config("tiny")
    assert not list(tmp_path.glob("*.tmp"))
    before = p.read_bytes()

    def boom(*a, **k):  # a crash in the middle of writing
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(p, net, opt, 6, cfg)
    assert p.read_bytes() == before, "the previous checkpoint survives a crash during the write"
    assert load_checkpoint(p)["step"] == 5


def test_model_config_json_roundtrip():
    for name in ("tiny", "small", "paper"):
        cfg = get_config(name)
        assert model_config_from_json(model_config_to_json(cfg)) == cfg


def test_metrics_log_drops_cut_rows_and_rows_after_resume(tmp_path):
    m = MetricsLog(tmp_path / METRICS, ["step", "total"])
    for s in range(6):
        m.write({"step": s, "total": float(s)})
    m.close()
    with open(tmp_path / METRICS, "a") as fh:
        fh.write("6,")  # a row cut by a kill
    assert [int(r["step"]) for r in read_metrics(tmp_path / METRICS)] == list(range(6))
    MetricsLog(tmp_path / METRICS, ["step", "total"], resume_at=4).close()
    assert [int(r["step"]) for r in read_metrics(tmp_path / METRICS)] == [0, 1, 2, 3]


def test_step_generator_is_a_function_of_its_arguments():
    a = torch.rand(3, generator=step_generator(0, 5, 0, 0))
    assert torch.equal(a, torch.rand(3, generator=step_generator(0, 5, 0, 0)))
    assert not torch.equal(a, torch.rand(3, generator=step_generator(0, 5, 0, 1)))
    assert not torch.equal(a, torch.rand(3, generator=step_generator(0, 6, 0, 0)))


# --- the loop on a stand-in model ---------------------------------------------------------------
class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 1)


class ToyObjective(nn.Module):
    def __init__(self, nan_at: int | None = None):
        super().__init__()
        self.nan_at, self.calls = nan_at, 0

    def forward(self, model, batch, captions=None, generator=None):
        self.calls += 1
        noise = 0.01 * torch.randn(batch["y"].shape, generator=generator)
        rec = (model.lin(batch["x"]) - batch["y"] - noise).abs().mean()
        if self.nan_at is not None and self.calls > self.nan_at:
            rec = rec * float("nan")
        z = torch.zeros(())
        return {"total": rec, "reconstruction": rec, "uniformity": z, "consistency": z, "text": z}


def toy_batches(start):
    s = start
    while True:
        g = torch.Generator().manual_seed(s)
        x = torch.randn(8, 4, generator=g)
        yield {"x": x, "y": x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])}
        s += 1


def toy_run(out, objective=None, halt_after=0, **kw):
    torch.manual_seed(0)
    c = TrainConfig(**{"steps": 12, "lr": 0.5, "checkpoint_every": 3, "out_dir": str(out),
                       "progress": False, **kw})
    return train(c, model=Toy(), objective=objective or ToyObjective(), model_cfg=get_config("tiny"),
                 make_batches=toy_batches, _halt_after=halt_after)


def test_loss_falls_and_resume_is_exact(tmp_path):
    ref = toy_run(tmp_path / "ref")
    toy_run(tmp_path / "cut", halt_after=7)  # halts at step 7, last checkpoint at step 6
    assert load_checkpoint(tmp_path / "cut" / CHECKPOINT)["step"] == 6
    res = toy_run(tmp_path / "cut")
    a = [float(r["total"]) for r in ref.metrics]
    b = [float(r["total"]) for r in res.metrics]
    assert [int(r["step"]) for r in res.metrics] == list(range(12))
    assert a == b
    assert a[-1] < a[0] / 2
    assert torch.equal(ref.model.lin.weight, res.model.lin.weight)
    lrs = [float(r["lr"]) for r in ref.metrics]
    assert lrs[0] == 0.0 and max(lrs) == pytest.approx(0.5)
    assert load_checkpoint(tmp_path / "ref" / CHECKPOINT)["step"] == 12


def test_weight_average_follows_its_recursion():
    from aef_lit.training import WeightAverage

    net = nn.Linear(3, 2)
    w0 = net.weight.detach().clone()
    avg = WeightAverage(net, decay=0.9)
    want = w0.clone()
    for n in range(1, 40):
        with torch.no_grad():
            net.weight.add_(torch.full_like(net.weight, 0.1))
        avg.update(net)
        d = min(0.9, (1 + n) / (10 + n))
        want = d * want + (1 - d) * net.weight.detach()
    assert torch.allclose(avg.shadow["weight"], want, atol=1e-6)
    assert (avg.shadow["weight"] < net.weight).all(), "the average lags behind weights that keep moving"
    with pytest.raises(ValueError, match="ema"):
        TrainConfig(ema=1.0)


def test_fused_weight_average_equals_the_tensor_by_tensor_average():
    """The foreach update over cached lists matches a plain walk over state_dict(), with a tied
    weight, a float and an integer buffer, a non-persistent buffer, and after `.to(dtype)`."""
    from aef_lit.training import WeightAverage

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)
            self.b.weight = self.a.weight  # tied
            self.register_buffer("scale", torch.ones(4))
            self.register_buffer("count", torch.zeros((), dtype=torch.long))
            self.register_buffer("scratch", torch.zeros(2), persistent=False)

    torch.manual_seed(0)
    net = Net()
    avg = WeightAverage(net, 0.7)
    ref = {k: v.clone() for k, v in net.state_dict().items()}
    for n in range(1, 8):
        if n == 4:
            net.to(torch.float64)  # parameters keep their objects, buffers are replaced
            avg.shadow = {k: v.to(torch.float64) if v.is_floating_point() else v for k, v in avg.shadow.items()}
            ref = {k: v.to(torch.float64) if v.is_floating_point() else v for k, v in ref.items()}
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
            net.scale.mul_(1.5)
            net.count.add_(1)
        avg.update(net)
        d = min(0.7, (1 + n) / (10 + n))
        for k, v in net.state_dict().items():
            ref[k] = d * ref[k] + (1 - d) * v if v.is_floating_point() else v.clone()
    assert set(avg.shadow) == set(ref) and "scratch" not in avg.shadow
    for k in ref:
        assert torch.allclose(avg.shadow[k], ref[k], atol=1e-6), k
    assert int(avg.shadow["count"]) == 7


def test_ema_is_checkpointed_resumed_and_returned(tmp_path):
    ref = toy_run(tmp_path / "ref", ema=0.8)
    ck = load_checkpoint(tmp_path / "ref" / CHECKPOINT)
    assert ck["ema"]["updates"] == 12 and "lin.weight" in ck["ema"]["shadow"]
    assert torch.equal(ref.model.lin.weight, ck["ema"]["shadow"]["lin.weight"]), "the result carries the average"
    assert not torch.equal(ck["model"]["lin.weight"], ck["ema"]["shadow"]["lin.weight"])
    toy_run(tmp_path / "cut", ema=0.8, halt_after=7)  # last checkpoint at step 6
    res = toy_run(tmp_path / "cut", ema=0.8)
    assert torch.equal(res.model.lin.weight, ref.model.lin.weight), "a resumed run ends with the same average"


def test_checkpoint_not_written_every_step(tmp_path):
    writes = []
    import aef_lit.training.loop as T

    orig = T.save_checkpoint
    try:
        T.save_checkpoint = lambda *a, **k: writes.append(a[3]) or orig(*a, **k)
        toy_run(tmp_path)
    finally:
        T.save_checkpoint = orig
    assert writes == [3, 6, 9, 12]


def test_grad_accum_runs_and_logs_tiles(tmp_path):
    res = toy_run(tmp_path, grad_accum=2, steps=4)
    assert len(res.metrics) == 4 and all(float(r["tiles_per_s"]) > 0 for r in res.metrics)


def test_nan_stops_with_clear_message_and_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 7.*step 6\).*intact"):
        toy_run(tmp_path, objective=ToyObjective(nan_at=7))
    ck = load_checkpoint(tmp_path / CHECKPOINT)
    assert ck["step"] == 6
    assert all(torch.isfinite(v).all() for v in ck["model"].values())
    assert [int(r["step"]) for r in read_metrics(tmp_path / METRICS)] == list(range(7))


# --- the real loop: kill -9 and resume, torchrun -------------------------------------------------
def _cli(out: Path, steps: int, extra=()):
    return [sys.executable, "-m", "aef_lit.training", "--data", "synthetic", "--preset", "tiny",
            "--tile", "16", "--frames", "4", "--batch-size", "2", "--steps", str(steps),
            "--checkpoint-every", "3", "--lr", "1e-3", "--warmup-frac", "0.1", "--no-progress",
            "--no-text", "--out-dir", str(out), *extra]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def test_kill_and_resume_continues_the_same_run(tmp_path):
    steps = 30
    ref = subprocess.run(_cli(tmp_path / "ref", steps), env=_env(), capture_output=True, text=True, cwd=ROOT)
    assert ref.returncode == 0, ref.stderr[-3000:]
    cut = tmp_path / "cut"
    proc = subprocess.Popen(_cli(cut, steps), env=_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            ck = cut / CHECKPOINT
            if ck.exists():
                try:
                    if load_checkpoint(ck)["step"] >= 9:
                        break
                except Exception:  # noqa: BLE001 - being replaced at this instant
                    pass
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the run was killed, not finished"
    killed_at = load_checkpoint(cut / CHECKPOINT)["step"]
    assert 9 <= killed_at < steps
    res = subprocess.run(_cli(cut, steps), env=_env(), capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resumed from {cut / CHECKPOINT} at step {killed_at}" in res.stderr
    a, b = read_metrics(tmp_path / "ref" / METRICS), read_metrics(cut / METRICS)
    assert [int(r["step"]) for r in b] == list(range(steps)), "no step repeated or lost"
    for ra, rb in zip(a, b):
        for k in ("lr", "total", "reconstruction", "uniformity", "consistency"):
            assert float(ra[k]) == pytest.approx(float(rb[k]), rel=1e-5, abs=1e-7), (ra["step"], k)
    wa = load_checkpoint(tmp_path / "ref" / CHECKPOINT)["model"]
    wb = load_checkpoint(cut / CHECKPOINT)["model"]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_torchrun_two_processes_hold_identical_weights(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    script = tmp_path / "train_and_save_ranks.py"  # the CLI's flags, plus the test-only hook
    script.write_text("import sys\nimport torch.distributed as dist\n"
                      "from aef_lit.training import config_from_args, train\n"
                      "train(config_from_args(sys.argv[1:])[0], _save_rank_weights=True)\n"
                      "dist.destroy_process_group()\n")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), *_cli(tmp_path, 4)[3:],
           "--device", "cpu"]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, cwd=ROOT, timeout=280)
    assert res.returncode == 0, res.stderr[-4000:]
    from safetensors.torch import load_file

    w0 = load_file(tmp_path / "final_rank0.safetensors")
    w1 = load_file(tmp_path / "final_rank1.safetensors")
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    rows = read_metrics(tmp_path / METRICS)
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3], "rank 0 logs each step once"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["world_size"] == 2
    ck = load_checkpoint(tmp_path / CHECKPOINT)
    assert ck["step"] == 4
    assert not any(math.isnan(float(r["total"])) for r in rows)


@pytest.mark.slow  # 30-40 s on the CI machine; tests/test_encoder.py::test_compile_fullgraph keeps compile in CI
def test_compile_matches_eager(tmp_path):
    eager = toy_run(tmp_path / "eager", steps=4)
    comp = toy_run(tmp_path / "comp", steps=4, compile=True)
    for a, b in zip(eager.metrics, comp.metrics):
        assert float(a["total"]) == pytest.approx(float(b["total"]), rel=1e-5)


def test_activation_checkpointing_keeps_gradients():
    from aef_lit.training import enable_activation_checkpointing

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(8, 8), nn.GELU()) for _ in range(3)])

        def forward(self, x):
            for b in self.blocks:
                x = x + b(x)
            return x.square().mean()

    torch.manual_seed(0)
    a = Net()
    b = Net()
    b.load_state_dict(a.state_dict())
    assert enable_activation_checkpointing(b) == 3
    x = torch.randn(4, 8)
    a(x).backward()
    b(x).backward()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-6)


@pytest.mark.real
def test_multisite_run_trains_on_sites_with_and_without_land_cover(eo_real, tmp_path):
    """Belgium has no land-cover map, Slovenia has one: both feed one model, losses stay finite."""
    cfg = TrainConfig(preset="tiny", data="multisite", sites=("belgium", "slovenia"), tile=16, frames=4,
                      batch_size=4, steps=3, lr=1e-3, occlude=0.5, gain=0.3, device="cpu", text=False,
                      checkpoint_every=3, out_dir=str(tmp_path), progress=False)
    res = train(cfg)
    assert [s.name for s in res.model.cfg.sources] == ["s2", "dem", "landcover"]
    assert res.step == 3 and all(math.isfinite(float(r["total"])) for r in res.metrics)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["data"] == "multisite" and saved["occlude"] == 0.5


def test_targets_none_trains_a_model_that_decodes_only_its_inputs(tmp_path):
    """`--targets none`: no land cover or DEM reaches the model (no leak into the evaluation)."""
    cfg, _ = config_from_args(["--targets", "none"])
    assert cfg.targets == ()
    run = TrainConfig(preset="tiny", data="synthetic", sites=("a",), tile=16, frames=4, batch_size=2, steps=2,
                      device="cpu", text=False, checkpoint_every=2, out_dir=str(tmp_path), progress=False,
                      targets=())
    res = train(run)
    assert [s.name for s in res.model.cfg.sources] == ["s2"]
    dem_only = train(run.replace(targets=("dem",), out_dir=str(tmp_path / "dem")))
    assert [s.name for s in dem_only.model.cfg.sources] == ["s2", "dem"]
    from aef_lit.training import model_card

    facts = {"steps": 2, "train_seconds": 1.0, "hardware": "cpu", "params": 1, "notes": "",
             "final_terms": dict.fromkeys(("total", "reconstruction", "uniformity", "consistency", "text"), 0.1),
             "heldout": {"sites": ["sweden"], "rows": 8, "pixels": 100, "model": 0.2, "model_refl": 0.01,
                         "temporal_mean": 0.3, "temporal_mean_refl": 0.02, "nearest_frame": 0.25,
                         "nearest_frame_refl": 0.015}}
    assert "--targets none" in model_card(res.model.cfg, run, facts)
    assert "--targets" not in model_card(res.model.cfg, TrainConfig(), facts)


def test_loss_weights_reach_the_objective_the_card_and_its_reproduce_line():
    """`--loss-weights a b c d`: parsed as numbers, checked, normalised into chapter 19's objective."""
    from aef_lit.data import GREENEARTHNET_S2
    from aef_lit.training import model_card
    from aef_lit.training.loop import build_model_and_objective

    cfg, _ = config_from_args(["--loss-weights", "1", "0.5", "0.02", "0"])
    assert cfg.loss_weights == (1.0, 0.5, 0.02, 0.0)
    _, _, objective = build_model_and_objective(cfg, (GREENEARTHNET_S2,))
    w = objective.weights
    assert math.isclose(w.a + w.b + w.c + w.d, 1.0) and math.isclose(w.b / w.a, 0.5) and w.d == 0.0
    for bad in (("1", "2"), ("1", "-1", "0", "0"), ("0", "0", "0", "0"), ("1", "x", "0", "0")):
        with pytest.raises(ValueError, match="loss_weights"):
            TrainConfig(loss_weights=bad)
    facts = {"steps": 2, "train_seconds": 1.0, "hardware": "cpu", "params": 1, "notes": "",
             "final_terms": dict.fromkeys(("total", "reconstruction", "uniformity", "consistency", "text"), 0.1),
             "heldout": {"sites": ["sweden"], "rows": 8, "pixels": 100, "model": 0.2, "model_refl": 0.01,
                         "temporal_mean": 0.3, "temporal_mean_refl": 0.02, "nearest_frame": 0.25,
                         "nearest_frame_refl": 0.015}}
    mcfg = get_config("tiny", sources=(GREENEARTHNET_S2,))
    card = model_card(mcfg, cfg, facts)
    assert "--loss-weights 1 0.5 0.02 0" in card and "(1, 0.5, 0.02, 0, normalised;" in card
    assert "--loss-weights" not in model_card(mcfg, TrainConfig(), facts)


# --- the command line's help, resume refusals, retired fields -------------------------------------
def test_every_cli_flag_has_help_and_sits_in_a_config_section():
    from dataclasses import fields

    from aef_lit.training import SECTIONS

    ap = build_parser()
    missing = [a.option_strings for a in ap._actions if not (a.help or "").strip()]
    assert not missing, f"flags without help text: {missing}"
    grouped = {a.dest: g.title for g in ap._action_groups for a in g._group_actions}
    for f in fields(TrainConfig):
        assert grouped.get(f.name) in SECTIONS, f"--{f.name} is not in a config section"
        assert f.name in SECTIONS[grouped[f.name]]
    assert sorted(n for names in SECTIONS.values() for n in names) == sorted(f.name for f in fields(TrainConfig))
    assert "--checkpoint-every" in ap.format_help()


def test_resume_with_another_ema_is_refused(tmp_path):
    toy_run(tmp_path, ema=0.8, halt_after=4)  # a checkpoint at step 3 holding an average of decay 0.8
    for other in (0.9, 0.0):
        with pytest.raises(ValueError, match=r"--ema 0\.8.*--ema " + str(other).rstrip("0").rstrip(".")):
            toy_run(tmp_path, ema=other)
    res = toy_run(tmp_path, ema=0.8)  # the same decay resumes
    assert res.step == 12
    plain = tmp_path / "plain"
    toy_run(plain, halt_after=4)
    with pytest.raises(ValueError, match="--ema 0,"):
        toy_run(plain, ema=0.5)  # a run without an average cannot grow one part way


def test_weight_average_refuses_a_saved_average_of_another_decay():
    from aef_lit.training import WeightAverage

    net = nn.Linear(2, 2)
    saved = WeightAverage(net, 0.8)
    saved.update(net)
    same = WeightAverage(net, 0.8)
    same.load_state_dict(saved.state_dict())
    assert same.updates == 1
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(net, 0.9).load_state_dict(saved.state_dict())


def test_test_hooks_left_the_config_and_older_run_folders_still_load(tmp_path):
    from dataclasses import fields

    names = {f.name for f in fields(TrainConfig)}
    assert not {"halt_after", "save_rank_weights"} & names
    for flag in ("--halt-after", "--save-rank-weights"):
        with pytest.raises(SystemExit):
            config_from_args([flag, "3"] if flag == "--halt-after" else [flag])
    older = {**json.loads(TrainConfig(steps=5).to_json()), "halt_after": 0, "save_rank_weights": False}
    assert TrainConfig.from_dict(older) == TrainConfig(steps=5)
    shipped = ROOT / "data" / "models" / "aef-tiny-greenearthnet" / "config.json"
    if shipped.exists():
        cfg = TrainConfig.from_dict(json.loads(shipped.read_text())["train_config"])
        assert cfg.model_overrides and cfg.overrides()
