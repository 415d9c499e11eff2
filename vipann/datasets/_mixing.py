"""Clips of the generated corpus: sound events mixed over background noise at a given SNR, from a seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vipann.datasets._sounds import (
    ALL_RECIPES,
    DOWNSTREAM_RECIPES,
    OOD_RECIPES,
    PRETRAINING_RECIPES,
    _fast_len,
    _filter,
    _lowpass,
    _unit,
)

__all__ = [
    "AUDIOSET_CLASSES",
    "DOWNSTREAM_CLASSES",
    "OOD_CLASS",
    "SynthEvent",
    "mix_clip",
    "render_clip",
    "synth_event",
]

#: The mini-AudioSet's classes, in class-index order.
AUDIOSET_CLASSES: tuple[str, ...] = tuple(PRETRAINING_RECIPES)
#: The transfer task's classes, in class-index order.
DOWNSTREAM_CLASSES: tuple[str, ...] = tuple(DOWNSTREAM_RECIPES)
#: The out-of-distribution sound family.
OOD_CLASS: str = next(iter(OOD_RECIPES))
_DEFAULT_CLIPS = {"train": 3000, "eval": 600}
_STREAMS = {"train": 1, "eval": 2, "downstream": 3, "ood": 4}


@dataclass(frozen=True)
class SynthEvent:
    """One sound event mixed into a clip.

    Attributes:
        name: Its class.
        onset: Start in seconds.
        duration: Length in seconds.
        snr_db: Its level over the background noise in dB, measured where the event is: its
            active 20-ms frames and the frequency bands holding its energy.
    """

    name: str
    onset: float
    duration: float
    snr_db: float


def synth_event(name: str, num_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Synthesise one event of a class, filling ``num_samples`` samples.

    Args:
        name: A class of ``AUDIOSET_CLASSES``, ``DOWNSTREAM_CLASSES`` or ``OOD_CLASS``
            (:mod:`vipann.datasets.synthetic`).
        num_samples: Length in samples.
        sample_rate: Sample rate in Hz (the classes are designed for 16 kHz).
        rng: The random generator all of the event's parameters are drawn from.

    Returns:
        float32 ``(num_samples,)`` waveform with peak amplitude 1 (silent only when
        ``num_samples`` is too short for the sound to start).

    Raises:
        ValueError: For an unknown class or a non-positive length or rate.
    """
    if name not in ALL_RECIPES:
        raise ValueError(f"unknown synthetic class {name!r}; choose one of: {', '.join(ALL_RECIPES)}")
    if num_samples <= 0 or sample_rate <= 0:
        raise ValueError(f"num_samples and sample_rate must be positive, got {num_samples}, {sample_rate}")
    wave = ALL_RECIPES[name].synth(int(num_samples), int(sample_rate), rng)
    peak = float(np.max(np.abs(wave)))
    return (wave / peak if peak > 0 else wave).astype(np.float32)


def _active_power(x: np.ndarray, sr: int) -> float:
    """Mean power over the 20-ms frames within 20 dB of the loudest (sparse sounds are not underrated)."""
    hop = max(sr // 50, 1)
    energy = (np.pad(x, (0, -len(x) % hop)).reshape(-1, hop) ** 2).mean(axis=1)
    return float(energy[energy >= 0.01 * energy.max()].mean()) + 1e-24


def _band_shares(x: np.ndarray, sr: int) -> np.ndarray:
    """Share of the energy in each of 40 log-spaced bands (a coarse mel-like resolution)."""
    m = _fast_len(len(x))
    power = np.abs(np.fft.rfft(x, m)) ** 2
    band = np.searchsorted(np.geomspace(60.0, 0.5 * sr, 41)[1:-1], np.fft.rfftfreq(m, 1.0 / sr))
    shares = np.bincount(band, weights=power, minlength=40)
    return shares / (shares.sum() + 1e-24)


def _background(rng: np.random.Generator, n: int, sr: int, muffled: bool) -> np.ndarray:
    """Stationary coloured noise of random tilt (white to pink) and bandwidth, unit RMS."""
    tilt = rng.uniform(0.0, 1.0)
    cutoff = rng.uniform(500, 1500) if muffled else min(rng.uniform(3000, 8000), 0.45 * sr)
    return _unit(
        _filter(rng.standard_normal(n), sr, lambda f: np.maximum(f, 20.0) ** (-tilt / 2) * _lowpass(f, cutoff))
    )


def mix_clip(
    rng: np.random.Generator, plan: list[tuple[str, float]], n: int, sr: int, muffled: bool = False
) -> tuple[np.ndarray, tuple[SynthEvent, ...]]:
    """Background noise plus the planned ``(class, snr_db)`` events, levelled and peak-limited.

    An event's SNR compares its power in its active frames and in the bands holding at least a
    tenth of its peak band share with the background's power in the same bands, so a pure tone
    and a broadband burst at the same SNR are about equally audible. The mixture is then scaled
    to an RMS between -30 and -16 dBFS and, if needed, down to a peak of 0.99.

    Args:
        rng: The clip's random generator.
        plan: ``(class, snr_db)`` of each event; durations and onsets are drawn here.
        n: Clip length in samples.
        sr: Sample rate in Hz.
        muffled: Low-pass the background at 0.5-1.5 kHz ("underwater").

    Returns:
        float32 ``(n,)`` audio in ``[-1, 1]`` and the events mixed in.
    """
    x = _background(rng, n, sr, muffled)
    noise = _band_shares(x, sr)
    events = []
    for name, snr in plan:
        lo, hi = ALL_RECIPES[name].seconds
        length = min(n, max(1, round(rng.uniform(lo, hi) * sr)))
        start = int(rng.integers(0, n - length + 1))
        event = synth_event(name, length, sr, rng).astype(np.float64)
        shares = _band_shares(event, sr)
        bands = shares >= 0.1 * shares.max()
        signal = _active_power(event, sr) * shares[bands].sum()
        x[start : start + length] += event * np.sqrt(10 ** (snr / 10) * noise[bands].sum() / signal)
        events.append(SynthEvent(name, start / sr, length / sr, round(snr, 2)))
    x *= 10 ** (rng.uniform(-30, -16) / 20) / (np.sqrt(np.mean(x**2)) + 1e-12)
    x *= min(1.0, 0.99 / (np.max(np.abs(x)) + 1e-12))
    return x.astype(np.float32), tuple(events)


def _rng(seed: int, stream: str, *ids: int) -> np.random.Generator:
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), _STREAMS[stream], *ids])))


def render_clip(
    index: int, *, split: str = "train", seed: int = 0, sample_rate: int = 16000, clip_seconds: float = 2.0
) -> tuple[np.ndarray, tuple[SynthEvent, ...]]:
    """Generate one mini-AudioSet clip (what :class:`MiniAudioSet` writes to disk, before 16-bit rounding).

    One to three distinct classes (probabilities 0.5, 0.3, 0.2) are drawn uniformly, each lasting
    a class-specific random duration at a uniform random onset. The SNRs over the background
    (stationary coloured noise of random tilt and bandwidth) are a clip-level 3..18 dB plus -4..4 dB
    per event, kept in 0..20 dB, and measured in each event's active frames and frequency bands, so
    a quiet event is equally hard to hear whatever its spectrum and never inaudible (a labelled but
    inaudible event would teach confident misses).

    Args:
        index: Clip number (any non-negative integer; clips do not depend on each other).
        split: ``"train"`` or ``"eval"`` (independent random streams).
        seed: Corpus seed.
        sample_rate: Sample rate in Hz.
        clip_seconds: Clip length in seconds.

    Returns:
        ``(wave, events)``: float32 ``(round(clip_seconds * sample_rate),)`` audio in ``[-1, 1]``
        and the events mixed in.

    Raises:
        ValueError: For an unknown split or a negative seed.
    """
    if split not in _DEFAULT_CLIPS:
        raise ValueError(f"split must be one of {tuple(_DEFAULT_CLIPS)}, got {split!r}")
    rng = _rng(seed, split, int(index))
    count = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    names = rng.choice(len(AUDIOSET_CLASSES), size=count, replace=False)
    # Events share a clip-level SNR (some clips are easy, some hard) so one does not bury another.
    level = rng.uniform(3.0, 18.0)
    plan = [(AUDIOSET_CLASSES[i], float(np.clip(level + rng.uniform(-4.0, 4.0), 0.0, 20.0))) for i in names]
    return mix_clip(rng, plan, round(clip_seconds * sample_rate), int(sample_rate))


def _downstream_clip(
    seed: int, fold: int, target: int, take: int, sr: int, clip_seconds: float
) -> tuple[np.ndarray, tuple[SynthEvent, ...]]:
    rng = _rng(seed, "downstream", fold, target, take)
    plan = [(DOWNSTREAM_CLASSES[target], float(rng.uniform(0.0, 20.0)))]
    if rng.uniform() < 0.3:  # a quieter pretraining-class sound in the background
        plan.append((AUDIOSET_CLASSES[int(rng.integers(len(AUDIOSET_CLASSES)))], float(rng.uniform(-6.0, 6.0))))
    return mix_clip(rng, plan, round(clip_seconds * sr), sr)


def _ood_clip(seed: int, index: int, sr: int, clip_seconds: float) -> tuple[np.ndarray, tuple[SynthEvent, ...]]:
    rng = _rng(seed, "ood", index)
    return mix_clip(rng, [(OOD_CLASS, float(rng.uniform(5.0, 20.0)))], round(clip_seconds * sr), sr, muffled=True)
