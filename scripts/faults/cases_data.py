"""Fault cases: datasets and audio files, and metrics on degenerate labels."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from vipann.datasets import ESC50, TruncatedAudioWarning, UrbanSound8K, load_audio
from vipann.metrics import (
    accuracy,
    expected_calibration_error,
    macro_roc_auc,
    mean_average_precision,
    roc_auc,
)

from .common import CLEAR, CORRECT, SR, Outcome, api_error, case, esc50, first_line, wav

G = "data"


def _csv(top: Path) -> Path:
    return top / "meta" / "esc50.csv"


@case(G, CLEAR, "ESC-50 whose CSV has only its header")
def _esc50_header_only(work: Path) -> Outcome:
    top = esc50(work)
    _csv(top).write_text(_csv(top).read_text().splitlines()[0] + "\n")
    return api_error(lambda: ESC50(top, sample_rate=SR), "lists no clips")


@case(G, CLEAR, "ESC-50 without meta/esc50.csv")
def _esc50_missing_csv(work: Path) -> Outcome:
    top = esc50(work)
    _csv(top).unlink()
    return api_error(lambda: ESC50(top, sample_rate=SR), "not the dataset folder as distributed")


@case(G, CLEAR, "ESC-50 with a category renamed")
def _esc50_wrong_class_name(work: Path) -> Outcome:
    top = esc50(work)
    _csv(top).write_text(_csv(top).read_text().replace(",dog,", ",cat,"))
    return api_error(lambda: ESC50(top, sample_rate=SR), "do not match the official esc50 classes")


@case(G, CLEAR, "ESC-50 with a clip missing (on_error='raise')")
def _esc50_missing_clip(work: Path) -> Outcome:
    top = esc50(work)
    victim = sorted((top / "audio").iterdir())[0]
    victim.unlink()
    return api_error(lambda: ESC50(top, sample_rate=SR), rf"{victim.name}.*on_error='skip'")


@case(G, CORRECT, "ESC-50 with a clip missing (on_error='skip'): the clip is left out and listed")
def _esc50_missing_clip_skipped(work: Path) -> Outcome:
    top = esc50(work)
    victim = sorted((top / "audio").iterdir())[0]
    victim.unlink()
    dataset = ESC50(top, sample_rate=SR, on_error="skip")
    ok = len(dataset) == 7 and any(victim.name in str(item) for item in dataset.skipped)
    return Outcome(CORRECT if ok else "silent wrong", f"{len(dataset)} clips, skipped {dataset.skipped}")


@case(G, CLEAR, "ESC-50 with a fold of 9 in the CSV")
def _esc50_bad_fold(work: Path) -> Outcome:
    top = esc50(work)
    lines = _csv(top).read_text().splitlines()
    cells = lines[1].split(",")
    cells[1] = "9"
    lines[1] = ",".join(cells)
    _csv(top).write_text("\n".join(lines) + "\n")
    return api_error(lambda: ESC50(top, sample_rate=SR), "fold 9 is not in 1-5")


@case(G, CLEAR, "UrbanSound8K whose CSV has only its header")
def _urbansound8k_header_only(work: Path) -> Outcome:
    top = work / "UrbanSound8K"
    (top / "metadata").mkdir(parents=True)
    (top / "audio").mkdir()
    (top / "metadata" / "UrbanSound8K.csv").write_text("slice_file_name,fsID,start,end,salience,fold,classID,class\n")
    return api_error(lambda: UrbanSound8K(top, sample_rate=SR), "lists no clips")


@case(G, CLEAR, "load_audio of a file that does not exist")
def _load_missing(work: Path) -> Outcome:
    return api_error(lambda: load_audio(work / "x.wav", SR), r"x\.wav.*no such file")


@case(G, CLEAR, "load_audio of an empty WAV")
def _load_empty(work: Path) -> Outcome:
    sf.write(work / "e.wav", np.zeros(0, np.float32), SR)
    return api_error(lambda: load_audio(work / "e.wav", SR), r"e\.wav' holds no samples")


@case(G, CORRECT, "load_audio of a WAV cut to half its data: warns with both frame counts")
def _load_truncated(work: Path) -> Outcome:
    data = wav(work / "full.wav").read_bytes()
    (work / "half.wav").write_bytes(data[: 44 + 16000])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        wave = load_audio(work / "half.wav", SR)
    hits = [w for w in seen if issubclass(w.category, TruncatedAudioWarning)]
    ok = wave.shape == (8000,) and hits and "16000" in str(hits[0].message) and "8000" in str(hits[0].message)
    return Outcome(CORRECT if ok else "silent wrong", first_line(str(hits[0].message)) if hits else "no warning")


@case(G, CLEAR, "load_audio of random bytes")
def _load_garbage(work: Path) -> Outcome:
    (work / "g.wav").write_bytes(os.urandom(500))
    return api_error(lambda: load_audio(work / "g.wav", SR), r"cannot decode audio .*g\.wav")


@case(G, CLEAR, "load_audio with a negative offset")
def _load_negative_offset(work: Path) -> Outcome:
    return api_error(lambda: load_audio(wav(work / "a.wav"), SR, offset=-1), "must be non-negative")


@case(G, CORRECT, "load_audio of a stereo file: downmixed to mono")
def _load_stereo(work: Path) -> Outcome:
    sf.write(work / "s.wav", 0.1 * np.ones((SR, 2), np.float32), SR)
    wave = load_audio(work / "s.wav", SR)
    ok = wave.shape == (SR,) and torch.allclose(wave, torch.full((SR,), 0.1), atol=1e-3)
    return Outcome(CORRECT if ok else "silent wrong", f"shape {tuple(wave.shape)}")


# -- metrics -----------------------------------------------------------------------------------------
def _labels_with_empty_class():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(6, 4, generator=g, dtype=torch.float64)
    targets = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 1], [0, 0, 0, 0]])
    return scores, targets  # class 2 has no positive


def _warns(fn, pattern: str) -> Outcome:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        value = fn()
    messages = [str(w.message) for w in seen]
    hit = [m for m in messages if pattern in m]
    if hit:
        return Outcome(CORRECT, first_line(hit[0]))
    return Outcome("silent wrong", f"value {float(value):.3f} with no warning naming the class")


@case(G, CORRECT, "mAP with a class that has no positive: the skipped class is named")
def _map_empty_class(work: Path) -> Outcome:
    return _warns(lambda: mean_average_precision(*_labels_with_empty_class()), "class indices 2")


@case(G, CORRECT, "mAP(ignore_empty=False): the class counted as zero is named")
def _map_empty_class_as_zero(work: Path) -> Outcome:
    return _warns(lambda: mean_average_precision(*_labels_with_empty_class(), ignore_empty=False), "counted as AP = 0")


@case(G, CORRECT, "macro ROC AUC with a class that has no positive: the skipped class is named")
def _auc_empty_class(work: Path) -> Outcome:
    return _warns(lambda: macro_roc_auc(*_labels_with_empty_class()), "class indices 2")


@case(G, CORRECT, "per-class ROC AUC: NaN classes are named")
def _roc_auc_nan_named(work: Path) -> Outcome:
    return _warns(lambda: roc_auc(*_labels_with_empty_class())[2], "class indices 2")


@case(G, CLEAR, "accuracy of NaN probabilities")
def _accuracy_nan(work: Path) -> Outcome:
    return api_error(lambda: accuracy(torch.full((2, 3), float("nan")), torch.tensor([0, 1])), "NaN or infinite")


@case(G, CLEAR, "ECE with targets out of range")
def _ece_bad_targets(work: Path) -> Outcome:
    return api_error(
        lambda: expected_calibration_error(torch.full((2, 3), 1 / 3), torch.tensor([0, 7])),
        r"class indices in \[0, 3\)",
    )


@case(G, CLEAR, "ECE of rows that do not sum to 1")
def _ece_not_probabilities(work: Path) -> Outcome:
    return api_error(lambda: expected_calibration_error(torch.ones(2, 3), torch.tensor([0, 1])), "sum to 1")


@case(G, CORRECT, "a dataset folder moved after caching still loads from the new place")
def _dataset_moved(work: Path) -> Outcome:
    top = esc50(work / "a")
    first = ESC50(top, sample_rate=SR)
    wave = first.load_waveform(0)
    shutil.move(str(work / "a"), str(work / "b"))
    second = ESC50(work / "b" / "ESC-50-master", sample_rate=SR)
    ok = len(first) == len(second) and torch.equal(wave, second.load_waveform(0))
    return Outcome(CORRECT if ok else "silent wrong", f"{len(second)} clips")
