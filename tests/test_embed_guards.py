"""`embed` refuses (or warns about) the input mistakes users make, before the forward pass (chapter 14)."""
from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from aef_lit.conventions import random_batch
from aef_lit.data import DataError, synthetic_sample
from aef_lit.data.preprocess import collate
from aef_lit.model import (
    EmbedInputError,
    EmbedInputWarning,
    build_model,
    check_embed_inputs,
    embed,
)

T0 = 18_628.0
PERIODS = torch.tensor([[[T0, T0 + 180], [T0 + 180, T0 + 365]]] * 2, dtype=torch.float64)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("tiny").eval()


@pytest.fixture(scope="module")
def batch(model):
    return random_batch(model.cfg, B=2, T=4, H=32, W=48, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def ref(model, batch):
    return embed(model, batch, PERIODS)


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmbedInputWarning)
        yield


def _with(batch, name, **changes):
    return dict(batch, **{name: batch[name].replace(**changes)})


def _unit(mu, dim=2):
    return torch.isfinite(mu).all() and torch.allclose(mu.norm(dim=dim), torch.ones(()), atol=1e-5)


def test_errors_are_value_errors_and_warnings_user_warnings():
    assert issubclass(EmbedInputError, DataError) and issubclass(EmbedInputError, ValueError)
    assert issubclass(EmbedInputWarning, UserWarning)


def test_valid_input_embeds_without_a_warning(model, batch, ref, no_warnings):
    assert ref.shape == (2, 2, 64, 32, 48) and _unit(ref)
    one = embed(model, batch, PERIODS[:, 0], strict=True)  # B 2, strict: nothing to object to
    assert one.shape == (2, 64, 32, 48) and _unit(one, dim=1)
    assert check_embed_inputs(model.cfg, batch, PERIODS) is PERIODS  # a float64 tensor passes unchanged
    assert check_embed_inputs(model, batch, PERIODS) is PERIODS  # the model itself works too


def test_guards_run_before_the_forward_pass(model, batch, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the forward pass ran")

    monkeypatch.setattr(model, "forward", boom)
    with pytest.raises(EmbedInputError, match="reversed"):
        embed(model, batch, PERIODS.flip(-1))


# 1. periods as lists, tuples, numpy arrays


def test_periods_as_lists_and_numpy_are_converted_exactly(model, batch, ref, no_warnings):
    assert torch.equal(embed(model, batch, PERIODS.tolist()), ref)
    assert torch.equal(embed(model, batch, PERIODS.numpy()), ref)
    as_tuples = tuple(map(tuple, PERIODS[:, 0].tolist()))
    assert torch.equal(embed(model, batch, as_tuples), embed(model, batch, PERIODS[:, 0]))
    whole_days = [[[int(a), int(b)] for a, b in row] for row in PERIODS.tolist()]
    assert torch.equal(embed(model, batch, whole_days), ref)  # integers are exact
    assert torch.equal(embed(model, batch, PERIODS.long()), ref)


@pytest.mark.parametrize("bad, match", [
    (PERIODS.float(), "float64"),
    (PERIODS.numpy().astype(np.float32), "float64"),
    (np.array([[["2021-01-01", "2021-07-01"]]] * 2, dtype="datetime64[D]"), "to_days"),
    ({"t_s": T0, "t_e": T0 + 365}, "float64 tensor"),
])
def test_periods_of_the_wrong_type_are_a_type_error(model, batch, bad, match):
    with pytest.raises(TypeError, match=match):
        embed(model, batch, bad)


def test_periods_of_an_ambiguous_shape_are_refused(model, batch):
    with pytest.raises(EmbedInputError, match=r"\(B, 2\) or \(B, P, 2\).*\[\[t_s, t_e\]\]"):
        embed(model, batch, [T0, T0 + 365])
    with pytest.raises(EmbedInputError, match="ragged"):
        embed(model, batch, [[[T0, T0 + 10]], [[T0, T0 + 10], [T0 + 10, T0 + 20]]])
    with pytest.raises(EmbedInputError, match="periods have 3 rows but the batch has 2"):
        embed(model, batch, PERIODS[:1].repeat(3, 1, 1))


def test_one_row_of_periods_applies_to_every_row(model, batch, ref, no_warnings):
    both = PERIODS[:1]  # the two rows of PERIODS are equal
    assert torch.allclose(embed(model, batch, both), ref, atol=1e-6)


# 2. empty and reversed periods


def test_an_empty_period_is_refused(model, batch):
    p = PERIODS.clone()
    p[1, 0, 1] = p[1, 0, 0]
    with pytest.raises(EmbedInputError, match=r"period \(1, 0\) is empty \(t_e == t_s\)"):
        embed(model, batch, p)


def test_a_reversed_period_is_refused(model, batch):
    with pytest.raises(EmbedInputError, match=r"reversed \(t_e < t_s\).*swap the two columns"):
        embed(model, batch, PERIODS.flip(-1))


# 3. NaN and inf


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_in_periods_is_refused(model, batch, value):
    p = PERIODS.clone()
    p[0, 1, 0] = value
    with pytest.raises(EmbedInputError, match=r"periods hold NaN or inf \(first at index \(0, 1, 0\)\)"):
        embed(model, batch, p)


def test_nan_time_of_an_observed_frame_is_refused(model, batch):
    t = batch["s1"].t.clone()
    assert batch["s1"].frame_mask[1, 0]
    t[1, 0] = float("nan")
    with pytest.raises(EmbedInputError, match=r"'s1': the observed frame \(row, frame\) = \(1, 0\) has a NaN"):
        embed(model, _with(batch, "s1", t=t), PERIODS)


def test_nan_time_of_a_masked_frame_is_padding(model, batch, ref, no_warnings):
    masked = {k: v.replace(t=torch.where(v.frame_mask, v.t, torch.tensor(float("nan"), dtype=torch.float64)))
              for k, v in batch.items()}
    assert any(torch.isnan(v.t).any() for v in masked.values())
    assert torch.equal(embed(model, masked, PERIODS), ref)


# 4. seconds and milliseconds instead of days


@pytest.mark.parametrize("scale, match", [(86_400.0, r"seconds since 1970.*divide by 86400\b"),
                                          (86_400_000.0, r"milliseconds since 1970.*divide by 86400000")])
def test_periods_in_seconds_or_ms_are_refused(model, batch, scale, match):
    with pytest.raises(EmbedInputError, match=match):
        embed(model, batch, PERIODS * scale)


@pytest.mark.parametrize("shift, match", [(2_440_587.5, "Julian dates"), (719_163.0, r"toordinal")])
def test_other_day_counts_are_named(model, batch, shift, match):
    with pytest.raises(EmbedInputError, match=match):
        embed(model, batch, PERIODS + shift)


def test_frame_times_in_seconds_are_refused(model, batch):
    with pytest.raises(EmbedInputError, match=r"timestamps t of source 's2'.*divide by 86400"):
        embed(model, _with(batch, "s2", t=batch["s2"].t * 86_400), PERIODS)


# 5. no frame at all, no observed frame


def test_zero_frames_are_refused(model, batch):
    empty = {k: v.replace(x=v.x[:, :0], t=v.t[:, :0], frame_mask=v.frame_mask[:, :0], weight=v.weight[:, :0],
                          meta=None if v.meta is None else v.meta[:, :0])
             if k in ("s2", "s1", "landsat") else v for k, v in batch.items()}
    with pytest.raises(EmbedInputError, match=r"no frame at all \(T = 0"):
        embed(model, empty, PERIODS)


def test_zero_frames_in_one_source_are_fine(model, batch, no_warnings):
    v = batch["s1"]
    no_s1 = _with(batch, "s1", x=v.x[:, :0], t=v.t[:, :0], frame_mask=v.frame_mask[:, :0], weight=v.weight[:, :0],
                  meta=v.meta[:, :0])
    assert _unit(embed(model, no_s1, PERIODS))


def _mask_rows(batch, rows):
    out = {}
    for k, v in batch.items():
        m = v.frame_mask.clone()
        if k in ("s2", "s1", "landsat"):
            m[rows] = False
        out[k] = v.replace(frame_mask=m)
    return out


def test_every_frame_masked_warns_and_strict_refuses(model, batch):
    none = _mask_rows(batch, [0, 1])
    with pytest.warns(EmbedInputWarning, match="no row of the batch has an observed frame.*inverted"):
        mu = embed(model, none, PERIODS)
    assert _unit(mu)  # the period's prior: legitimate for padding tiles, hence a warning
    with pytest.raises(EmbedInputError, match="no row of the batch has an observed frame.*strict=True"):
        embed(model, none, PERIODS, strict=True)


def test_one_row_without_frames_is_allowed_unless_strict(model, batch, no_warnings):
    one = _mask_rows(batch, [1])  # e.g. a padding or cloud-covered tile of embed_sample
    assert _unit(embed(model, one, PERIODS))
    with pytest.raises(EmbedInputError, match=r"rows \[1\] have no observed frame"):
        embed(model, one, PERIODS, strict=True)


# 6. channels


def test_a_wrong_channel_count_is_refused(model, batch):
    with pytest.raises(EmbedInputError, match=r"'s2' has 3 channels, the model expects 10: B02, B03, .*in that order"):
        embed(model, _with(batch, "s2", x=batch["s2"].x[:, :, :3]), PERIODS)


def test_integer_values_are_a_type_error(model, batch):
    dn = (batch["s2"].x.abs() * 1000).to(torch.int16)
    with pytest.raises(TypeError, match="'s2': x is torch.int16.*digital numbers"):
        embed(model, _with(batch, "s2", x=dn), PERIODS)


# 7. sources


def test_no_input_source_is_refused(model, batch):
    only_targets = {k: batch[k] for k in ("dem", "landcover")}
    with pytest.raises(EmbedInputError, match=r"none of the model's input sources \['s2', 's1', 'landsat'\]"):
        embed(model, only_targets, PERIODS)


def test_a_missing_input_source_is_refused_with_the_fix(model, batch):
    no_s1 = {k: v for k, v in batch.items() if k != "s1"}
    with pytest.raises(EmbedInputError, match=r"lacks the model's input source\(s\) \['s1'\].*frame_mask False"):
        embed(model, no_s1, PERIODS)
    renamed = {("S1" if k == "s1" else k): v for k, v in batch.items()}
    with pytest.raises(EmbedInputError, match=r"\['s1'\]; the batch's keys \['S1'\] .*case-sensitive"):
        embed(model, renamed, PERIODS)


def test_an_unknown_source_warns_and_is_ignored(model, batch, ref):
    extra = dict(batch, ndvi=batch["dem"])
    with pytest.warns(EmbedInputWarning, match=r"\['ndvi'\] are not sources of the model"):
        mu = embed(model, extra, PERIODS)
    assert torch.equal(mu, ref)
    with pytest.raises(EmbedInputError, match="not sources of the model.*strict=True"):
        embed(model, extra, PERIODS, strict=True)


def test_a_batch_of_tensors_is_a_type_error(model, batch):
    with pytest.raises(TypeError, match=r"batch\['s2'\] is a Tensor, not a SourceBatch"):
        embed(model, dict(batch, s2=batch["s2"].x), PERIODS)


# 8. digital numbers instead of reflectance


@pytest.fixture(scope="module")
def site(model):
    return synthetic_sample(model.cfg.sources, height=32, width=32, seed=3)


def _year(site):
    return torch.tensor([site.time_span()], dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_collated_batch_from_reflectance_does_not_warn(model, seed, no_warnings):
    s = synthetic_sample(model.cfg.sources, height=32, width=48, seed=seed)
    mu = embed(model, collate([s], model.cfg.sources), _year(s), strict=True)
    assert mu.shape == (1, 64, 32, 48) and _unit(mu, dim=1)


def test_digital_numbers_through_collate_warn(model, site):
    s2 = site.sources["s2"]
    dn = replace(site, sources={**site.sources, "s2": replace(s2, values=s2.values * 10_000)})
    with pytest.warns(EmbedInputWarning, match=r"'s2': in every band all of the observed values sit at \+6.*"
                                               r"digital numbers.*Divide DN by 10000"):
        embed(model, collate([dn], model.cfg.sources), _year(site))
    with pytest.raises(EmbedInputError, match="digital numbers"):
        embed(model, collate([dn], model.cfg.sources), _year(site), strict=True)


def test_unnormalised_digital_numbers_in_a_hand_built_batch_warn(model, site):
    good = collate([site], model.cfg.sources)
    raw = dict(good, s2=good["s2"].replace(x=torch.from_numpy(site.sources["s2"].values[None] * 10_000)
                                                [:, :good["s2"].x.shape[1]]))
    with pytest.warns(EmbedInputWarning, match=r"'s2': observed values reach .*un-normalised.*divide by 10000"):
        embed(model, raw, _year(site))


def test_nan_pixels_neither_hide_nor_raise_the_dn_warning(model, site, no_warnings):
    good = collate([site], model.cfg.sources)
    x = good["s2"].x.clone()
    x[0, 0, :, 0, 0] = float("nan")  # the model ignores non-finite pixels (chapter 5)
    embed(model, dict(good, s2=good["s2"].replace(x=x)), _year(site))  # no warning
    with pytest.warns(EmbedInputWarning, match="un-normalised"):
        embed(model, dict(good, s2=good["s2"].replace(x=x * 1000)), _year(site))


def test_bright_visible_bands_alone_do_not_look_like_digital_numbers(model, site, no_warnings):
    good = collate([site], model.cfg.sources)
    x = good["s2"].x.clone()
    x[:, :, :8] = torch.where(x[:, :, :8] != 0, 6.0, 0.0)  # snow: visible and NIR at the clip, SWIR not
    embed(model, dict(good, s2=good["s2"].replace(x=x)), _year(site))


# 9. spatial size


def test_tile_size_not_a_multiple_of_16_is_refused(model):
    b = random_batch(model.cfg, B=2, T=3, H=24, W=40)
    with pytest.raises(EmbedInputError, match=r"multiples of 16 .*got 24x40 for 's2': pad to 32x48"):
        embed(model, b, PERIODS)


def test_sources_on_different_grids_are_refused(model, batch):
    v = batch["landsat"]
    small = _with(batch, "landsat", x=v.x[..., :16], weight=v.weight[..., :16])
    with pytest.raises(EmbedInputError, match=r"disagree on \(B, H, W\)"):
        embed(model, small, PERIODS)
