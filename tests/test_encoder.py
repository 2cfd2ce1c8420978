"""STP encoder (chapter 10): shapes, masking, permutation, time, compile, parameter counts."""
from __future__ import annotations

import pytest
import torch

from aef_lit.conventions import get_config, random_batch
from aef_lit.model.encoder import OPERATOR_DEPTH, STPBlock, STPEncoder, channels_last, count_parameters, packed_order
from aef_lit.model.projectors import InputProjection


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    cfg = get_config("tiny", n_blocks=1)
    g = torch.Generator().manual_seed(0)
    proj, enc = InputProjection(cfg), STPEncoder(cfg).eval()
    batch = random_batch(cfg, B=2, T={"s2": 3, "s1": 2, "landsat": 2}, H=32, W=48, generator=g)
    with torch.no_grad():
        x, t, mask = proj(batch)
        y = enc(x, t, mask)
    return cfg, enc, x, t, mask, y


def test_shape_nonsquare(setup):
    cfg, enc, x, t, mask, y = setup
    assert y.shape == (2, 7, cfg.d_precision, 16, 24) and y.dtype == torch.float32
    assert torch.isfinite(y).all()
    assert (y[~mask] == 0).all() and (y[mask].abs().sum((-1, -2, -3)) > 0).all()


@pytest.mark.parametrize("hw", [(16, 16), (16, 48), (48, 32)])
def test_any_multiple_of_16(hw, gen):
    """§12: the port crashed on non-square inputs."""
    cfg = get_config("tiny", n_blocks=1)
    enc = STPEncoder(cfg)
    x = torch.randn(1, 2, cfg.d_precision, hw[0] // 2, hw[1] // 2, generator=gen)
    t = torch.tensor([[18_700.0, 18_710.0]], dtype=torch.float64)
    with torch.no_grad():
        assert enc(x, t, torch.ones(1, 2, dtype=torch.bool)).shape == x.shape


def test_padded_frame_has_no_effect(setup, gen):
    cfg, enc, x, t, mask, y = setup
    x2, t2 = x.clone(), t.clone()
    x2[~mask] = 100 * torch.randn(x2[~mask].shape, generator=gen)
    t2[~mask] = t2[~mask] + 3000.0
    with torch.no_grad():
        assert torch.equal(enc(x2, t2, mask), y)


def test_masking_a_real_frame_removes_it(setup, gen):
    """Dropping a frame by its mask bit (student perturbation) equals never having seen it."""
    cfg, enc, x, t, mask, y = setup
    m2 = mask.clone()
    m2[0, 0] = False
    x2 = x.clone()
    x2[0, 0] = torch.randn(x2[0, 0].shape, generator=gen)
    with torch.no_grad():
        a, b = enc(x, t, m2), enc(x2, t, m2)
    assert torch.equal(a, b)
    assert not torch.allclose(a[0, 1], y[0, 1])  # and it did matter before


def test_permutation_equivariance(setup, gen):
    cfg, enc, x, t, mask, y = setup
    perm = torch.randperm(x.shape[1], generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(enc(x[:, perm], t[:, perm], mask[:, perm]), y[:, perm], atol=1e-4, rtol=1e-4)


def test_rows_independent(setup):
    cfg, enc, x, t, mask, y = setup
    x2 = x.clone()
    x2[1] += 1.0
    with torch.no_grad():
        assert torch.equal(enc(x2, t, mask)[0], y[0])


def test_time_matters(setup):
    cfg, enc, x, t, mask, y = setup
    with torch.no_grad():
        assert not torch.allclose(enc(x, t + 60.0, mask), y, atol=1e-4)


def test_refuses_float32_times(setup):
    cfg, enc, x, t, mask, y = setup
    with pytest.raises(TypeError, match="float64"):
        enc(x, t.float(), mask)


def test_gradients_reach_every_parameter(setup):
    cfg, enc, x, t, mask, y = setup
    enc.zero_grad()
    enc(x, t, mask).pow(2).mean().backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_compile_fullgraph(setup, no_shape_checks):
    """No graph breaks: static shapes, no .item(), no branches on data (eager backend: tracing only)."""
    cfg, enc, x, t, mask, y = setup
    torch._dynamo.reset()
    c = torch.compile(enc, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(c(x, t, mask), y)


@pytest.mark.slow
def test_compile_fullgraph_inductor(setup, no_shape_checks):
    cfg, enc, x, t, mask, y = setup
    torch._dynamo.reset()
    c = torch.compile(enc, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(c(x, t, mask), y, atol=1e-4, rtol=1e-4)


def test_blocks_are_checkpointable(setup):
    """The training chapter wraps `encoder.blocks[i].forward` in activation checkpointing."""
    cfg, enc, *_ = setup
    assert isinstance(enc.blocks, torch.nn.ModuleList) and isinstance(enc.blocks[0], STPBlock)


def test_packed_order_puts_real_frames_first_in_order():
    mask = torch.tensor([[False, True, False, True, True, False],
                         [True, False, False, False, False, False],
                         [False, False, False, False, False, False]])
    order = packed_order(mask)
    assert order.shape == (3, 3)  # the longest row has 3 real frames
    assert order[0].tolist() == [1, 3, 4] and order[1, 0] == 0
    for row, o in zip(mask, order):  # distinct indices; the real ones come first, in time order
        assert len(set(o.tolist())) == len(o)
        n = int(row.sum())
        assert row[o[:n]].all() and torch.equal(o[:n], torch.nonzero(row).flatten())
    assert packed_order(torch.ones(2, 4, dtype=torch.bool)) is None  # every column used: nothing to skip
    assert packed_order(torch.tensor([[True, False], [False, True]])).tolist() == [[0], [1]]  # 2 frames -> 1


def test_channels_last_keeps_values_and_puts_channels_innermost():
    x = torch.randn(2, 3, 5, 4, 6)
    y = channels_last(x)
    assert torch.equal(x, y) and y.shape == x.shape
    assert y.stride(2) == 1 and y.stride(4) == 5  # D innermost, then w


def test_packing_matches_the_static_path_with_gradients():
    """Rows with different numbers of real frames, one row with none: same features and gradients."""
    torch.manual_seed(1)
    cfg = get_config("tiny", n_blocks=2)
    enc = STPEncoder(cfg).train()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 7, cfg.d_precision, 16, 16, generator=g)
    t = torch.sort(torch.rand(3, 7, generator=g, dtype=torch.float64) * 365, dim=1).values
    mask = torch.tensor([[True, False, True, False, False, True, False],
                         [False, False, True, False, False, False, False],
                         [False] * 7])
    assert packed_order(mask).shape[1] == 3
    out, grads = {}, {}
    for pack in (False, True):
        enc.pack_frames = pack
        enc.zero_grad()
        xg = x.clone().requires_grad_(True)
        y = enc(xg, t, mask)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        out[pack], grads[pack] = y.detach(), (xg.grad, [p.grad.clone() for p in enc.parameters()])
    torch.testing.assert_close(out[True], out[False], atol=1e-5, rtol=1e-5)
    assert (out[True][~mask] == 0).all()
    torch.testing.assert_close(grads[True][0], grads[False][0], atol=1e-5, rtol=1e-5)
    assert (grads[True][0][~mask] == 0).all()  # a frame the row lacks gets no gradient
    for a, b in zip(grads[True][1], grads[False][1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_packing_skips_the_work_of_missing_frames():
    """The blocks see only the frames some row has: fewer frames in, fewer computed."""
    cfg = get_config("tiny", n_blocks=1)
    enc = STPEncoder(cfg).eval()
    seen = []
    enc.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[2].shape[1]))
    x = torch.randn(2, 6, cfg.d_precision, 16, 16)
    t = torch.arange(12, dtype=torch.float64).view(2, 6)
    mask = torch.tensor([[True, True, False, False, False, False], [False, True, False, True, True, False]])
    with torch.no_grad():
        enc(x, t, mask)
        enc.pack_frames = False
        enc(x, t, mask)
    assert seen == [3, 6]


def test_parameter_counts():
    with torch.device("meta"):
        paper = STPEncoder(get_config("paper"))
        tiny = STPEncoder(get_config("tiny"))
    n = count_parameters(paper)
    assert OPERATOR_DEPTH == 2 and abs(n / 480e6 - 1) < 0.1, n
    assert count_parameters(tiny) < 1_000_000


@pytest.mark.slow
def test_paper_preset_builds_on_cpu():
    enc = STPEncoder(get_config("paper"))
    assert abs(count_parameters(enc) / 480e6 - 1) < 0.1
