"""Sound-event recipes of the generated corpus: one seeded, vectorised numpy function per class.

Every recipe has the signature ``(num_samples, sample_rate, rng) -> float64 array`` and fills the
whole span it is given (a recipe's sounds may contain silences, e.g. between hits). All parameters
are drawn from ``rng`` inside class-specific ranges (pitches, rates, decays, filters), so two
events of one class differ while the classes stay apart on a log-mel spectrogram. Frequencies are
in Hz and partials above 0.45 of the sample rate are muted, so a recipe means the same sound at any
sample rate (the corpus is designed for 16 kHz, i.e. content below 8 kHz).

Filters are zero-phase magnitude responses applied in the frequency domain (one real FFT each),
which keeps everything vectorised and fast. Mixing events into clips is :mod:`vipann.datasets._mixing`;
file writing and datasets live in :mod:`vipann.datasets.synthetic`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ALL_RECIPES",
    "DOWNSTREAM_RECIPES",
    "OOD_RECIPES",
    "PRETRAINING_RECIPES",
    "Recipe",
]

TAU = 2.0 * np.pi
Synth = Callable[[int, int, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Recipe:
    """How one class is made.

    Attributes:
        synth: The generator function ``(num_samples, sample_rate, rng) -> waveform``.
        seconds: ``(shortest, longest)`` event duration used when mixing clips.
        family: The sound family (tonal, noise, impulsive, ...).
        description: One line saying how the sound is synthesised.
    """

    synth: Synth
    seconds: tuple[float, float]
    family: str
    description: str


# ---------------------------------------------------------------------------------- primitives
def _lu(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Log-uniform draw (pitches and rates are perceived on a log scale)."""
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _fast_len(n: int) -> int:
    """The smallest 5-smooth integer >= n (FFT sizes with large prime factors are slow)."""
    best = 1 << max(n - 1, 0).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def _time(n: int, sr: int) -> np.ndarray:
    return np.arange(n) / sr


def _ramp(n: int, sr: int, attack: float, release: float) -> np.ndarray:
    i = np.arange(n, dtype=np.float64)
    return np.clip(np.minimum(i / max(attack * sr, 1.0), (n - 1 - i) / max(release * sr, 1.0)), 0.0, 1.0)


def _phase(freq: float | np.ndarray, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, TAU) + TAU * np.cumsum(np.broadcast_to(freq, (n,))) / sr


def _partials(phase: np.ndarray, f0: float | np.ndarray, ratios: np.ndarray, amps: np.ndarray, sr: int) -> np.ndarray:
    ratios = np.asarray(ratios, dtype=np.float64)[:, None]
    audible = ratios * np.asarray(f0) < 0.45 * sr
    return (np.asarray(amps, dtype=np.float64)[:, None] * audible * np.sin(ratios * phase)).sum(axis=0)


def _filter(x: np.ndarray, sr: int, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    m = _fast_len(len(x))
    spectrum = np.fft.rfft(x, m) * gain(np.fft.rfftfreq(m, 1.0 / sr))
    return np.fft.irfft(spectrum, m)[: len(x)]


def _lowpass(f: np.ndarray, fc: float, order: int = 2) -> np.ndarray:
    return 1.0 / np.sqrt(1.0 + (f / fc) ** (2 * order))


def _highpass(f: np.ndarray, fc: float, order: int = 2) -> np.ndarray:
    return 1.0 / np.sqrt(1.0 + (fc / np.maximum(f, 1e-3)) ** (2 * order))


def _peak(f: np.ndarray, fc: float, bandwidth: float) -> np.ndarray:
    return 1.0 / np.sqrt(1.0 + ((f - fc) / (0.5 * bandwidth)) ** 2)


def _noise(rng: np.random.Generator, n: int, sr: int, exponent: float = 0.0, lo: float = 20.0) -> np.ndarray:
    """Gaussian noise with a ``1 / f**exponent`` power spectrum (0 white, 1 pink, 2 brown)."""
    x = rng.standard_normal(n)
    return x if exponent == 0 else _filter(x, sr, lambda f: np.maximum(f, lo) ** (-exponent / 2))


def _slow(rng: np.random.Generator, n: int, sr: int, cutoff: float) -> np.ndarray:
    """A smooth random curve with unit standard deviation varying below ``cutoff`` Hz."""
    x = _filter(rng.standard_normal(n), sr, lambda f: _lowpass(f, cutoff, 2))
    return _unit(x - x.mean())


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _onsets(rng: np.random.Generator, n: int, sr: int, count: int, spacing: float) -> np.ndarray:
    """``count`` sorted sample positions in ``[0, n)`` at least about ``spacing`` s apart where possible."""
    slots = max(int(n / (spacing * sr)), 1)
    picks = np.sort(rng.choice(slots, size=min(count, slots), replace=False))
    return ((picks + rng.uniform(0, 0.5, len(picks))) * n / slots).astype(np.int64)


def _place(n: int, onsets: np.ndarray, pieces: list[np.ndarray]) -> np.ndarray:
    out = np.zeros(n)
    for start, piece in zip(onsets, pieces):
        end = min(n, int(start) + len(piece))
        out[start:end] += piece[: end - start]
    return out


def _modes(sr: int, freqs: np.ndarray, decays: np.ndarray, amps: np.ndarray, length: int) -> np.ndarray:
    """Impulse response of damped resonant modes (struck objects)."""
    t = _time(length, sr)[None, :]
    freqs = np.minimum(freqs, 0.45 * sr)[:, None]
    return (amps[:, None] * np.exp(-t / decays[:, None]) * np.sin(TAU * freqs * t)).sum(axis=0)


def _gate(t: np.ndarray, period: float, on: float, edge: float = 0.005) -> np.ndarray:
    pos = np.mod(t, period)
    return np.clip(np.minimum(pos, on - pos) / edge, 0.0, 1.0)


# ---------------------------------------------------------------------------------- pretraining classes
def _pure_tone(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    return np.sin(_phase(_lu(rng, 250, 3000), n, sr, rng)) * _ramp(n, sr, rng.uniform(0.005, 0.05), 0.05)


def _chirp(rising: bool) -> Synth:
    def synth(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
        lo = _lu(rng, 150, 700)
        hi = min(lo * rng.uniform(2.5, 8.0), 0.42 * sr)
        frac = np.linspace(0.0, 1.0, n) ** rng.uniform(0.6, 1.6)
        f = lo * (hi / lo) ** (frac if rising else 1.0 - frac)
        ph = _phase(f, n, sr, rng)
        return _partials(ph, f, np.array([1, 2]), np.array([1, rng.uniform(0, 0.3)]), sr) * _ramp(n, sr, 0.01, 0.02)

    return synth


def _harmonic_stack(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    f0, k = _lu(rng, 180, 500), np.arange(1, rng.integers(4, 11))
    amps = k ** -rng.uniform(0.6, 1.4) * rng.uniform(0.5, 1.0, len(k))
    return _partials(_phase(f0, n, sr, rng), f0, k, amps, sr) * _ramp(n, sr, 0.03, 0.08)


def _buzzer(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    x = np.tanh(rng.uniform(4, 12) * np.sin(_phase(_lu(rng, 500, 1500), n, sr, rng)))
    cutoff = min(_lu(rng, 4000, 7000), 0.4 * sr)
    return _filter(x, sr, lambda f: _lowpass(f, cutoff)) * _ramp(n, sr, 0.005, 0.01)


def _am_tone(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    mod = 1.0 - rng.uniform(0.8, 1.0) * 0.5 * (1.0 - np.cos(_phase(rng.uniform(6, 14), n, sr, rng)))
    return np.sin(_phase(_lu(rng, 300, 2500), n, sr, rng)) * mod * _ramp(n, sr, 0.02, 0.05)


def _fm_warble(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    fc = _lu(rng, 500, 3000)
    f = fc * (1.0 + rng.uniform(0.05, 0.2) * np.sin(_phase(rng.uniform(3, 10), n, sr, rng)))
    return np.sin(_phase(f, n, sr, rng)) * _ramp(n, sr, 0.02, 0.05)


def _dual_tone_beep(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    f1 = _lu(rng, 350, 1500)
    x = np.sin(_phase(f1, n, sr, rng)) + np.sin(_phase(f1 * rng.uniform(1.25, 1.6), n, sr, rng))
    on = rng.uniform(0.1, 0.25)
    return x * _gate(_time(n, sr), on + rng.uniform(0.1, 0.25), on)


def _white_burst(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    cutoff = min(_lu(rng, 5000, 7800), 0.45 * sr)
    x = _filter(rng.standard_normal(n), sr, lambda f: _lowpass(f, cutoff, 4))
    return x * _ramp(n, sr, 0.002, rng.uniform(0.02, 0.1))


def _pink(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    return _noise(rng, n, sr, 1.0) * _ramp(n, sr, rng.uniform(0.05, 0.2), rng.uniform(0.05, 0.2))


def _band_noise(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    fc, half = min(_lu(rng, 500, 3000), 0.3 * sr), 2 ** rng.uniform(0.25, 0.5)
    x = _filter(rng.standard_normal(n), sr, lambda f: _highpass(f, fc / half, 4) * _lowpass(f, fc * half, 4))
    return x * _ramp(n, sr, rng.uniform(0.05, 0.2), rng.uniform(0.05, 0.2))


def _hiss(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    cutoff = min(_lu(rng, 2500, 5000), 0.3 * sr)
    return _filter(rng.standard_normal(n), sr, lambda f: _highpass(f, cutoff, 4)) * _ramp(n, sr, 0.05, 0.1)


def _pulsing_noise(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    x = _filter(_noise(rng, n, sr, 0.5), sr, lambda f: _highpass(f, 300.0) * _lowpass(f, 4000.0))
    return x * 0.5 * (1.0 + np.tanh(4.0 * np.sin(_phase(rng.uniform(2, 7), n, sr, rng))))


def _click_train(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    step = sr / rng.uniform(8, 60)
    at = (np.arange(0, n - 1, step) + rng.uniform(0, step) + rng.normal(0, 0.03 * step)).astype(np.int64)
    x = np.zeros(n)
    x[np.clip(at, 0, n - 1)] = rng.uniform(0.7, 1.0, len(at)) * rng.choice([-1.0, 1.0])
    lo, hi = _lu(rng, 400, 1500), min(_lu(rng, 4000, 7000), 0.45 * sr)
    return _filter(x, sr, lambda f: _highpass(f, lo) * _lowpass(f, hi))


def _struck(
    lo: float,
    hi: float,
    ratios: tuple[tuple[float, float], ...],
    decay: tuple[float, float],
    hits: tuple[int, int] = (1, 4),
    thump: float = 0.0,
) -> Synth:
    """Struck objects: damped modes at random ratios of a random fundamental, plus a contact click."""

    def synth(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
        freqs = _lu(rng, lo, hi) * np.array([1.0] + [rng.uniform(a, b) for a, b in ratios])
        tau = rng.uniform(*decay) / np.arange(1, len(freqs) + 1) ** 0.5
        amps = np.concatenate([[1.0], rng.uniform(0.2, 0.8, len(ratios))])
        ir = _modes(sr, freqs, tau, amps, min(n, int(6 * tau[0] * sr) + 1))
        ir += thump * rng.standard_normal(len(ir)) * np.exp(-_time(len(ir), sr) / 0.004)
        at = _onsets(rng, n, sr, int(rng.integers(hits[0], hits[1] + 1)), 0.12)
        return _place(n, at, [ir * rng.uniform(0.5, 1.0) for _ in at])

    return synth


def _noise_snap(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    at = _onsets(rng, n, sr, int(rng.integers(1, 6)), 0.08)
    bursts = []
    for _ in at:
        tau = rng.uniform(0.005, 0.03)
        bursts.append(rng.standard_normal(int(6 * tau * sr) + 1) * np.exp(-_time(int(6 * tau * sr) + 1, sr) / tau))
    fc = _lu(rng, 1000, 4000)
    return _filter(_place(n, at, bursts), sr, lambda f: _highpass(f, fc / 1.6, 2) * _lowpass(f, fc * 1.6, 2))


#: Formant frequencies (Hz) and bandwidths of three vowels (adult male averages).
_FORMANTS = {
    "a": ((730, 1090, 2440), (90, 110, 160), (1.0, 0.6, 0.25)),
    "i": ((270, 2290, 3010), (60, 100, 150), (1.0, 0.45, 0.35)),
    "u": ((300, 870, 2240), (60, 90, 150), (1.0, 0.5, 0.1)),
}


def _vowel(name: str) -> Synth:
    freqs, widths, amps = _FORMANTS[name]

    def synth(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
        t = _time(n, sr)
        f0 = (
            _lu(rng, 90, 260)
            * (1.0 - rng.uniform(0, 0.2) * np.linspace(0.0, 1.0, n))
            * (1.0 + 0.02 * _slow(rng, n, sr, 4.0))
        )
        cycles = rng.uniform() + np.cumsum(f0) / sr
        pulses = np.diff(np.floor(cycles), prepend=np.floor(cycles[0]))
        scale = rng.uniform(0.9, 1.2)

        def tract(f: np.ndarray) -> np.ndarray:
            peaks = sum(a * _peak(f, fc * scale, bw) for fc, bw, a in zip(freqs, widths, amps))
            return peaks * _lowpass(f, 0.42 * sr, 4)

        x = _filter(pulses, sr, tract)
        syllable, gap = rng.uniform(0.12, 0.35), rng.uniform(0.04, 0.15)
        gate = _gate(t + rng.uniform(0, syllable), syllable + gap, syllable, 0.02)
        return x * gate * _ramp(n, sr, 0.02, 0.02)

    return synth


# ---------------------------------------------------------------------------------- downstream classes
def _siren(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    lo = _lu(rng, 500, 900)
    sweep = 0.5 - 0.5 * np.cos(_phase(1.0 / rng.uniform(0.4, 1.5), n, sr, rng))
    f = lo * rng.uniform(1.4, 2.0) ** sweep
    return _partials(_phase(f, n, sr, rng), f, np.array([1, 2, 3]), np.array([1.0, 0.4, 0.2]), sr) * _ramp(
        n, sr, 0.05, 0.05
    )


def _trill(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t, note = _time(n, sr), 1.0 / rng.uniform(8, 20)
    pos = np.mod(t, note) / note
    duty = rng.uniform(0.3, 0.7)
    hi = min(_lu(rng, 3000, 6000), 0.42 * sr)
    f = hi * rng.uniform(0.5, 0.8) ** np.minimum(pos / duty, 1.0)
    env = np.where(pos < duty, np.sin(np.pi * np.minimum(pos / duty, 1.0)), 0.0)
    return np.sin(_phase(f, n, sr, rng)) * env


def _drops(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    at = _onsets(rng, n, sr, int(rng.integers(2, 9)), 0.1)
    drops = []
    for _ in at:
        length, tau = int(0.15 * sr), rng.uniform(0.01, 0.04)
        f0, rise, glide = _lu(rng, 500, 1500), rng.uniform(1.5, 3.0), rng.uniform(0.01, 0.03)
        f = f0 * rise ** np.minimum(_time(length, sr) / glide, 1.0)
        drops.append(np.sin(_phase(f, length, sr, rng)) * np.exp(-_time(length, sr) / tau))
    return _place(n, at, drops)


def _crickets(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = _time(n, sr)
    pulse = 1.0 / rng.uniform(25, 50)
    chirp = pulse * rng.integers(3, 7)
    carrier = np.sin(_phase(min(_lu(rng, 3500, 6000), 0.42 * sr), n, sr, rng))
    return carrier * _gate(t, pulse, 0.6 * pulse, 0.002) * _gate(t, chirp + rng.uniform(0.1, 0.4), chirp, 0.002)


def _rain(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    drops = np.zeros(n)
    count = int(rng.uniform(200, 1500) * n / sr)
    drops[rng.integers(0, n, count)] = rng.pareto(2.5, count) * rng.choice([-1.0, 1.0], count)
    bed = 0.05 * _noise(rng, n, sr, 1.0)
    lo = _lu(rng, 500, 2000)
    return _filter(drops + bed, sr, lambda f: _highpass(f, lo, 2)) * _ramp(n, sr, 0.1, 0.1)


def _wind(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    gust = np.exp(0.6 * _slow(rng, n, sr, rng.uniform(0.5, 2.0)))
    cutoff = _lu(rng, 300, 1500)
    body = _filter(_noise(rng, n, sr, 1.0), sr, lambda f: _lowpass(f, cutoff, 2))
    fc = _lu(rng, 300, 1200)
    whistle = _filter(rng.standard_normal(n), sr, lambda f: _peak(f, fc, rng.uniform(20, 60)))
    x = _unit(body) + rng.uniform(0.3, 1.0) * _unit(whistle) * gust
    return x * gust * _ramp(n, sr, 0.2, 0.2)


def _clock(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    period, f = rng.uniform(0.25, 0.5), _lu(rng, 2000, 4500)
    tock = f * rng.uniform(0.7, 0.9)
    tau = rng.uniform(0.003, 0.008)
    length = int(6 * tau * sr) + 1
    at = np.arange(rng.uniform(0, period) * sr, n, period * sr).astype(np.int64)
    one = np.ones(1)
    pieces = [_modes(sr, np.array([tock if i % 2 else f]), np.array([tau]), one, length) for i in range(len(at))]
    return _place(n, at, pieces)


def _car_horn(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    f1 = _lu(rng, 350, 500)
    drive = rng.uniform(2, 6)
    x = np.tanh(drive * np.sin(_phase(f1, n, sr, rng))) + np.tanh(drive * np.sin(_phase(f1 * 1.26, n, sr, rng)))
    x = _filter(x, sr, lambda f: _highpass(f, 300.0) * _lowpass(f, min(3000.0, 0.4 * sr)))
    honk = rng.uniform(0.3, 1.2)
    return x * _gate(_time(n, sr), honk + rng.uniform(0.1, 0.4), honk, 0.02)


def _frog(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t, f0 = _time(n, sr), _lu(rng, 100, 300)
    k = np.arange(1, 16)
    x = _partials(_phase(f0, n, sr, rng), f0, k, 1.0 / k, sr)
    rasp = 0.5 * (1.0 + np.sin(_phase(rng.uniform(15, 40), n, sr, rng))) ** 2
    fc = _lu(rng, 500, 1500)
    x = _filter(x * rasp, sr, lambda f: 0.2 + _peak(f, fc, fc * 0.5))
    croak = rng.uniform(0.15, 0.4)
    return x * _gate(t + rng.uniform(0, croak), croak + rng.uniform(0.1, 0.3), croak, 0.02)


# ---------------------------------------------------------------------------------- out-of-distribution
def _underwater_engine(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    f0 = _lu(rng, 15, 50) * (1.0 + 0.01 * _slow(rng, n, sr, 0.5))
    cycles = np.cumsum(f0) / sr
    pulses = np.diff(np.floor(cycles), prepend=0.0)
    fc, cutoff = _lu(rng, 80, 300), _lu(rng, 250, 900)
    hum = _filter(pulses, sr, lambda f: (0.3 + _peak(f, fc, fc)) * _lowpass(f, cutoff, 4) * _highpass(f, 10.0))
    hum *= 1.0 - rng.uniform(0.3, 0.8) * 0.5 * (1.0 - np.cos(_phase(rng.uniform(0.5, 3.0), n, sr, rng)))
    churn = _filter(_noise(rng, n, sr, 2.0), sr, lambda f: _lowpass(f, cutoff, 4))
    dry = _unit(hum) + rng.uniform(0.1, 0.5) * _unit(churn)
    rt60 = rng.uniform(0.3, 1.0)
    length = min(n, int(rt60 * sr))
    ir = rng.standard_normal(length) * np.exp(-6.9 * _time(length, sr) / rt60)
    m = _fast_len(n + length)
    wet = np.fft.irfft(np.fft.rfft(dry, m) * np.fft.rfft(ir, m), m)[:n]
    wet = _filter(wet, sr, lambda f: _lowpass(f, cutoff, 2))
    mix = rng.uniform(0.5, 0.8)
    return (1 - mix) * _unit(dry) + mix * _unit(wet)


#: The mini-AudioSet classes, in class-index order.
PRETRAINING_RECIPES: dict[str, Recipe] = {
    "pure tone": Recipe(_pure_tone, (0.5, 1.8), "tonal", "steady sine, 250-3000 Hz"),
    "rising chirp": Recipe(_chirp(True), (0.2, 1.0), "sweep", "sine sweeping up 2.5-8x from 150-700 Hz"),
    "falling chirp": Recipe(_chirp(False), (0.2, 1.0), "sweep", "sine sweeping down 2.5-8x to 150-700 Hz"),
    "harmonic stack": Recipe(_harmonic_stack, (0.3, 1.5), "harmonic", "3-10 harmonics of 180-500 Hz"),
    "buzzer": Recipe(_buzzer, (0.3, 1.2), "harmonic", "clipped 500-1500 Hz sine (piezo-like): odd harmonics"),
    "AM tone": Recipe(_am_tone, (0.4, 1.5), "modulated", "300-2500 Hz sine, 6-14 Hz deep AM"),
    "FM warble": Recipe(_fm_warble, (0.4, 1.5), "modulated", "500-3000 Hz sine, 3-10 Hz vibrato of 5-20 %"),
    "dual-tone beep": Recipe(_dual_tone_beep, (0.6, 1.8), "tonal", "two sines 350-2400 Hz, 0.1-0.25 s on/off"),
    "white noise burst": Recipe(_white_burst, (0.1, 0.6), "noise", "white noise, sharp onset, low-passed"),
    "pink noise": Recipe(_pink, (0.6, 1.6), "noise", "1/f noise with slow fades"),
    "band noise": Recipe(_band_noise, (0.6, 1.6), "noise", "white noise band-passed to 0.5-1 octave at 0.5-3 kHz"),
    "high hiss": Recipe(_hiss, (0.3, 1.4), "noise", "white noise high-passed at 2.5-5 kHz"),
    "pulsing noise": Recipe(_pulsing_noise, (0.6, 1.6), "noise", "band noise switched on/off at 2-7 Hz"),
    "click train": Recipe(_click_train, (0.3, 1.5), "impulsive", "band-passed clicks at 8-60 Hz"),
    "percussive knock": Recipe(
        _struck(200, 800, ((1.5, 2.8), (3.0, 5.0)), (0.03, 0.12), hits=(2, 5), thump=1.0),
        (0.3, 1.0),
        "percussive",
        "2-5 hits of damped modes at 200-800 Hz, 30-120 ms decay, with a noise click",
    ),
    "metallic ping": Recipe(
        _struck(1500, 5000, ((1.35, 1.65), (2.2, 2.9)), (0.08, 0.35)),
        (0.3, 1.2),
        "percussive",
        "1-4 hits of inharmonic modes at 1.5-5 kHz, 80-350 ms decay",
    ),
    "noise snap": Recipe(_noise_snap, (0.15, 0.8), "percussive", "1-5 band-passed noise bursts, 5-30 ms decay"),
    "vowel a": Recipe(_vowel("a"), (0.4, 1.6), "vocal", "glottal pulses at 90-260 Hz, formants of /a/, syllables"),
    "vowel i": Recipe(_vowel("i"), (0.4, 1.6), "vocal", "glottal pulses at 90-260 Hz, formants of /i/, syllables"),
    "vowel u": Recipe(_vowel("u"), (0.4, 1.6), "vocal", "glottal pulses at 90-260 Hz, formants of /u/, syllables"),
}

#: The transfer-task classes, in class-index order.
DOWNSTREAM_RECIPES: dict[str, Recipe] = {
    "siren sweep": Recipe(_siren, (1.2, 2.0), "sweep", "3 harmonics gliding 500-1800 Hz, 0.4-1.5 s cycles"),
    "bird-like trill": Recipe(_trill, (0.4, 1.5), "sweep", "8-20 fast falling 3-6 kHz notes per second"),
    "dripping": Recipe(_drops, (1.0, 2.0), "percussive", "2-8 drops: upward-gliding 0.5-1.5 kHz pings"),
    "church bell": Recipe(
        _struck(200, 700, ((0.5, 0.5), (1.19, 1.21), (1.49, 1.51), (2.0, 2.0), (2.5, 2.7)), (0.5, 2.0)),
        (1.2, 2.0),
        "percussive",
        "1-4 strikes of bell partials (0.5, 1, 1.2, 1.5, 2, 2.6) of 200-700 Hz, 0.5-2 s decay",
    ),
    "cricket chirp": Recipe(_crickets, (0.8, 2.0), "modulated", "3.5-6 kHz tone in 25-50 Hz pulse groups"),
    "rain crackle": Recipe(_rain, (1.2, 2.0), "impulsive", "200-1500 random clicks/s over high-passed noise"),
    "wind gusts": Recipe(_wind, (1.2, 2.0), "noise", "low-passed 1/f noise with gusts and a narrow whistle"),
    "clock tick": Recipe(_clock, (1.2, 2.0), "impulsive", "tick-tock of 2-4.5 kHz pings every 0.25-0.5 s"),
    "car horn": Recipe(_car_horn, (0.6, 2.0), "harmonic", "two clipped tones a major third apart, 350-630 Hz"),
    "frog croak": Recipe(_frog, (0.6, 2.0), "vocal", "100-300 Hz harmonics, 15-40 Hz rasp, croak gating"),
}

#: The out-of-distribution family (absent from both sets above).
OOD_RECIPES: dict[str, Recipe] = {
    "underwater engine": Recipe(
        _underwater_engine,
        (2.0, 2.0),
        "hum",
        "15-50 Hz firing pulses, 0.5-3 Hz AM, low-passed at 250-900 Hz, reverberant (RT60 0.3-1 s)",
    ),
}

ALL_RECIPES: dict[str, Recipe] = {**PRETRAINING_RECIPES, **DOWNSTREAM_RECIPES, **OOD_RECIPES}
