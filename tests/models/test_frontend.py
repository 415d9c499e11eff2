"""Tests for vipann.models.frontend: the log-mel front end against the golden torchlibrosa tensors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from _golden import golden_inputs, load_golden

from vipann.models.augment import Mixup, SpecAugment, do_mixup
from vipann.models.frontend import FrontendConfig, LogMelFrontend, mel_filterbank, stft_kernels

STFT_ROWS = list(range(0, 513, 32))


@pytest.fixture(scope="module")
def golden():
    return load_golden()


@pytest.fixture(scope="module")
def inputs():
    return golden_inputs()


# --- FrontendConfig ---------------------------------------------------------------------------


def test_config_defaults_round_trip():
    config = FrontendConfig()
    d = config.to_dict()
    assert d == {
        "sample_rate": 32000,
        "window_size": 1024,
        "hop_size": 320,
        "mel_bins": 64,
        "fmin": 50.0,
        "fmax": 14000.0,
        "ref": 1.0,
        "amin": 1e-10,
        "top_db": None,
    }
    assert FrontendConfig.from_dict(d) == config
    # The "config" block of a PANNs key list (int fmin/fmax) is accepted and normalised.
    from_keys = FrontendConfig.from_dict({"sample_rate": 32000, "fmin": 50, "fmax": 14000})
    assert from_keys == config and isinstance(from_keys.fmin, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hop_size = 160  # type: ignore[misc]


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown FrontendConfig keys \['n_mels'\]"):
        FrontendConfig.from_dict({"n_mels": 128})
    with pytest.raises(TypeError, match="expects a dict"):
        FrontendConfig.from_dict([("hop_size", 1)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"fmax": 20000.0}, ValueError, "Nyquist"),
        ({"fmin": 14000.0}, ValueError, "below fmax"),
        ({"fmin": -1.0}, ValueError, "fmin must be >= 0"),
        ({"hop_size": 2048}, ValueError, "must not exceed window_size"),
        ({"mel_bins": 0}, ValueError, "mel_bins must be positive"),
        ({"sample_rate": 32000.0}, TypeError, "sample_rate must be an int"),
        ({"window_size": True}, TypeError, "window_size must be an int"),
        ({"amin": 0.0}, ValueError, "must be positive"),
        ({"ref": float("nan")}, TypeError, "finite number"),
        ({"top_db": -1.0}, ValueError, "top_db"),
    ],
)
def test_config_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        FrontendConfig(**kwargs)


def test_num_frames():
    config = FrontendConfig()
    assert [config.num_frames(n) for n in (32000, 160000, 320000, 960000)] == [101, 501, 1001, 3001]
    with pytest.raises(ValueError, match="non-negative int"):
        config.num_frames(-1)


# --- filterbank and STFT kernels vs torchlibrosa ------------------------------------------------


def test_mel_filterbank_matches_librosa_golden(golden):
    mel = mel_filterbank(32000, 1024, 64, 50.0, 14000.0)
    assert mel.shape == (513, 64) and mel.dtype == torch.float32
    torch.testing.assert_close(mel, golden["frontend.melW"], rtol=0, atol=1e-7)
    mel64 = mel_filterbank(32000, 1024, 64, 50.0, 14000.0, dtype=torch.float64)
    assert mel64.dtype == torch.float64
    torch.testing.assert_close(mel64, golden["frontend.melW"].double(), rtol=0, atol=1e-7)


def test_mel_filterbank_properties():
    mel = mel_filterbank(16000, 512, 40, 0.0, 8000.0, dtype=torch.float64)
    assert mel.shape == (257, 40)
    assert (mel >= 0).all() and (mel.sum(0) > 0).all()  # no empty filter at this resolution
    with pytest.raises(ValueError, match="fmin < fmax"):
        mel_filterbank(16000, 512, 40, 100.0, 9000.0)


def test_stft_kernels_match_torchlibrosa_golden(golden):
    real, imag = stft_kernels(1024)
    assert real.shape == imag.shape == (513, 1, 1024)
    torch.testing.assert_close(real[STFT_ROWS], golden["frontend.stft_real_rows"], rtol=0, atol=1e-6)
    torch.testing.assert_close(imag[STFT_ROWS], golden["frontend.stft_imag_rows"], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="positive int"):
        stft_kernels(0)


# --- LogMelFrontend ------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["1s", "5s", "10s"])
def test_logmel_matches_golden(golden, inputs, tag):
    frontend = LogMelFrontend(FrontendConfig()).eval()
    with torch.no_grad():
        out = frontend(inputs[tag])
    expected = golden[f"frontend.{tag}.logmel"]
    assert out.shape == expected.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("seconds", "frames"), [(1, 101), (5, 501), (10, 1001)])
def test_frame_counts(seconds, frames):
    out = LogMelFrontend()(torch.zeros(2, 32000 * seconds))
    assert out.shape == (2, 1, frames, 64)
    # Silence is clamped to amin: 10*log10(1e-10) = -100 dB.
    assert torch.all(out == -100.0)


def test_buffers_are_not_persistent():
    frontend = LogMelFrontend()
    assert frontend.state_dict() == {}
    assert {name for name, _ in frontend.named_buffers()} == {"window", "melW"}
    frontend.load_state_dict({}, strict=True)


def test_float64_module(golden, inputs):
    frontend = LogMelFrontend().double()
    assert frontend.melW.dtype == frontend.window.dtype == torch.float64
    out = frontend(inputs["1s"])  # float32 input is cast to the module dtype
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, golden["frontend.1s.logmel"].double(), rtol=1e-4, atol=1e-4)


def test_autocast_does_not_lower_precision(inputs):
    frontend = LogMelFrontend()
    reference = frontend(inputs["1s"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = frontend(inputs["1s"])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_follows_module(golden, inputs):
    frontend = LogMelFrontend().cuda()
    out = frontend(inputs["5s"].cuda())
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), golden["frontend.5s.logmel"], rtol=1e-4, atol=1e-4)


def test_top_db_and_ref_semantics(inputs):
    x = inputs["1s"]
    base = LogMelFrontend()(x)
    # ref scales 0 dB: every value shifts by -10*log10(ref).
    shifted = LogMelFrontend(FrontendConfig(ref=10.0))(x)
    torch.testing.assert_close(shifted, base - 10.0)
    # top_db clamps to (per-clip peak - top_db) and leaves the rest untouched.
    clamped = LogMelFrontend(FrontendConfig(top_db=10.0))(x)
    floor = base.max() - 10.0
    torch.testing.assert_close(clamped, torch.maximum(base, floor))
    assert clamped.min() == pytest.approx(floor.item()) and (base < floor).any()


def test_top_db_is_per_clip(inputs):
    frontend = LogMelFrontend(FrontendConfig(top_db=20.0))
    quiet = inputs["1s"] * 1e-3
    loud = inputs["1s"]
    alone = frontend(quiet)
    batched = frontend(torch.cat([quiet, loud]))
    torch.testing.assert_close(batched[:1], alone)


def test_frontend_input_errors():
    frontend = LogMelFrontend()
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        frontend(torch.zeros(32000))
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        frontend(torch.zeros(1, 1, 32000))
    with pytest.raises(TypeError, match="floating-point"):
        frontend(torch.zeros(1, 32000, dtype=torch.int16))
    with pytest.raises(TypeError, match="floating-point"):
        frontend([0.0] * 32000)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 513"):
        frontend(torch.zeros(1, 512))
    assert frontend(torch.zeros(1, 513)).shape == (1, 1, 2, 64)
    with pytest.raises(ValueError, match="move one of them"):
        frontend(torch.zeros(1, 32000, device="meta"))
    with pytest.raises(TypeError, match="FrontendConfig"):
        LogMelFrontend({"sample_rate": 32000})  # type: ignore[arg-type]


# --- SpecAugment -------------------------------------------------------------------------------


def test_specaugment_is_identity_in_eval():
    aug = SpecAugment().eval()
    x = torch.randn(4, 1, 501, 64)
    assert aug(x) is x


def test_specaugment_zeroes_stripes_in_train():
    aug = SpecAugment(time_drop_width=64, time_stripes_num=2, freq_drop_width=8, freq_stripes_num=2).train()
    x = torch.rand(16, 1, 501, 64) + 1.0  # strictly positive, so zeros are the mask
    before = x.clone()
    g = torch.Generator().manual_seed(0)
    out = aug(x, generator=g)
    assert torch.equal(x, before)  # not in place
    assert out.shape == x.shape
    dropped = out == 0
    assert torch.equal(out[~dropped], x[~dropped])
    assert dropped.any()
    time_rows = dropped[:, 0].all(dim=2)  # (B, T): whole frames dropped
    freq_cols = dropped[:, 0].all(dim=1)  # (B, F): whole mel bins dropped
    # Every zero lies in a dropped frame or a dropped bin.
    assert torch.equal(dropped[:, 0], time_rows[:, :, None] | freq_cols[:, None, :])
    assert (time_rows.sum(1) <= 2 * 63).all() and (freq_cols.sum(1) <= 2 * 7).all()
    # Masks differ between examples (drawn per example, not per batch).
    assert not all(torch.equal(dropped[0], dropped[i]) for i in range(1, 16))
    # Same generator seed, same mask.
    again = aug(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_specaugment_short_input_and_errors():
    aug = SpecAugment(time_drop_width=64).train()
    out = aug(torch.ones(8, 1, 10, 4))  # fewer frames than the drop width
    assert out.shape == (8, 1, 10, 4)
    with pytest.raises(ValueError, match=r"\(batch, channels, time, freq\)"):
        aug(torch.ones(8, 10, 4))
    with pytest.raises(ValueError, match="time_drop_width"):
        SpecAugment(time_drop_width=0)


# --- Mixup -------------------------------------------------------------------------------------


def test_mixup_lambdas_pairs():
    mixup = Mixup(alpha=1.0, generator=torch.Generator().manual_seed(0))
    lam = mixup.lambdas(8)
    assert lam.shape == (8,) and lam.dtype == torch.float32
    torch.testing.assert_close(lam[0::2] + lam[1::2], torch.ones(4))
    assert ((lam >= 0) & (lam <= 1)).all()
    again = Mixup(alpha=1.0, generator=torch.Generator().manual_seed(0)).lambdas(8)
    assert torch.equal(lam, again)


@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_mixup_lambdas_follow_beta(alpha):
    lam = Mixup(alpha, generator=torch.Generator().manual_seed(1)).lambdas(40000, dtype=torch.float64)[0::2]
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)).
    assert lam.mean().item() == pytest.approx(0.5, abs=0.01)
    assert lam.var().item() == pytest.approx(1.0 / (4.0 * (2.0 * alpha + 1.0)), rel=0.05)


def test_mixup_tiny_alpha_is_finite():
    lam = Mixup(0.01, generator=torch.Generator().manual_seed(0)).lambdas(1000)
    assert torch.isfinite(lam).all()


def test_do_mixup_halves_the_batch():
    x = torch.randn(6, 1, 5, 3)
    lam = Mixup(generator=torch.Generator().manual_seed(0)).lambdas(6)
    out = do_mixup(x, lam)
    assert out.shape == (3, 1, 5, 3)
    for i in range(3):
        torch.testing.assert_close(out[i], x[2 * i] * lam[2 * i] + x[2 * i + 1] * lam[2 * i + 1])
    targets = torch.eye(6)[:, :4]
    assert do_mixup(targets, lam).shape == (3, 4)
    assert torch.equal(Mixup.do_mixup(x, lam), out)


def test_mixup_errors():
    with pytest.raises(ValueError, match="even batch size"):
        Mixup().lambdas(5)
    with pytest.raises(ValueError, match="positive finite"):
        Mixup(alpha=0.0)
    with pytest.raises(ValueError, match="even batch size"):
        do_mixup(torch.zeros(3, 2), torch.full((3,), 0.5))
    with pytest.raises(ValueError, match=r"must have shape \(4,\)"):
        do_mixup(torch.zeros(4, 2), torch.full((2,), 0.5))
