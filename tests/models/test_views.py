"""Weak and strong views of log-mel inputs (FixMatch / FMUC augmentations)."""

import pytest
import torch
import torch.nn.functional as F

from vipann.models.views import StrongAugment, WeakAugment, gaussian_noise, random_shift, sharpen


def _x(batch=6, frames=40, bins=16, seed=0):
    return torch.randn(batch, 1, frames, bins, generator=torch.Generator().manual_seed(seed))


def _shifted(x, dt, df, fill):
    """Reference translation of one (1, T, F) example by (dt, df)."""
    if fill == "wrap":
        return torch.roll(x, (dt, df), dims=(1, 2))
    t, f = x.shape[1:]
    padded = F.pad(x, (abs(df), abs(df), abs(dt), abs(dt)))
    return padded[:, abs(dt) - dt : abs(dt) - dt + t, abs(df) - df : abs(df) - df + f]


@pytest.mark.parametrize("fill", ["zero", "wrap"])
def test_shift_is_a_translation_within_the_bounds(fill):
    x = _x()
    out = random_shift(x, 0.1, 0.25, fill=fill, generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and not torch.equal(out, x)
    found = []
    for b in range(len(x)):
        matches = [
            (dt, df)
            for dt in range(-4, 5)  # floor(0.1 * 40) = 4 frames
            for df in range(-4, 5)  # floor(0.25 * 16) = 4 bins
            if torch.equal(out[b], _shifted(x[b], dt, df, fill))
        ]
        assert len(matches) == 1, (b, matches)
        found.append(matches[0])
    assert len(set(found)) > 1  # every example draws its own shift


def test_shift_is_reproducible_and_does_not_touch_its_input():
    x = _x()
    copy = x.clone()
    a = random_shift(x, 0.2, 0.2, generator=torch.Generator().manual_seed(3))
    b = random_shift(x, 0.2, 0.2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.equal(x, copy)
    assert torch.equal(random_shift(x, 0.0, 0.0), x)


def test_sharpen_and_noise_by_hand():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1.0
    out = sharpen(x, 0.5)
    assert out[0, 0, 2, 2].item() == pytest.approx(1 + 0.5 * (1 - 1 / 9))
    assert out[0, 0, 1, 1].item() == pytest.approx(0.5 * (0 - 1 / 9))
    assert out[0, 0, 0, 0].item() == 0.0  # outside the 3 x 3 neighbourhood
    flat = torch.full((2, 1, 4, 4), 3.0)
    assert torch.allclose(sharpen(flat, torch.tensor([0.3, 2.0])), flat)  # no edges, nothing to sharpen
    g = torch.Generator().manual_seed(0)
    noisy = gaussian_noise(torch.zeros(2, 1, 50, 40), torch.tensor([0.0, 0.5]), g)
    assert torch.equal(noisy[0], torch.zeros(1, 50, 40))
    assert noisy[1].std().item() == pytest.approx(0.5, rel=0.05)


def test_views_change_the_input_keep_its_shape_and_never_coincide():
    x = _x(batch=8)
    weak, strong = WeakAugment(), StrongAugment(masking=True, mask_time_width=8, mask_freq_width=4)
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        w, s = weak(x, g), strong(x, g)
        assert w.shape == s.shape == x.shape
        assert not torch.equal(w, x) and not torch.equal(s, x)
        for b in range(len(x)):  # never the same view, not even for one clip
            assert not torch.equal(w[b], s[b])
            assert not torch.equal(s[b], x[b])
    # the same generator state gives the same views (exact resume)
    a = strong(x, torch.Generator().manual_seed(9))
    assert torch.equal(a, strong(x, torch.Generator().manual_seed(9)))
    assert not torch.equal(a, strong(x, torch.Generator().manual_seed(10)))


def test_strong_without_sharpening_is_shift_plus_noise():
    x = _x(batch=3)
    strong = StrongAugment(sharpen=0.0, noise_std=1e-6)
    out = strong(x, torch.Generator().manual_seed(2))
    shifted = StrongAugment(sharpen=0.0).weak(x, torch.Generator().manual_seed(2))
    assert torch.allclose(out, shifted, atol=1e-4) and not torch.equal(out, shifted)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: WeakAugment(time_shift=1.5), "time_shift"),
        (lambda: WeakAugment(fill="reflect"), "fill"),
        (lambda: StrongAugment(noise_std=0.0), "noise_std must be > 0"),
        (lambda: StrongAugment(sharpen=-1.0), "sharpen"),
        (lambda: StrongAugment(masking=True, mask_time_width=0), "time_drop_width"),
        (lambda: random_shift(torch.zeros(3, 4), 0.1, 0.1), "batch, channels, frames, mel_bins"),
    ],
)
def test_bad_settings(build, match):
    with pytest.raises(ValueError, match=match):
        build()
