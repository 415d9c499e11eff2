"""Damaged audio and metadata: truncated WAVs warn with both frame counts; empty files, header-only CSVs refused."""

import os
import warnings

import numpy as np
import pytest
import soundfile as sf
from _make_datasets import make_esc50

from vipann.datasets import ESC50, AudioReadError, MetadataError, TruncatedAudioWarning, load_audio
from vipann.datasets.audio import wav_declared_frames


@pytest.fixture
def full(tmp_path):
    path = tmp_path / "full.wav"
    sf.write(path, 0.1 * np.random.default_rng(0).standard_normal(16000).astype("float32"), 16000, subtype="PCM_16")
    return path


def test_a_complete_wav_loads_without_a_word(full):
    assert wav_declared_frames(full) == 16000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_audio(full, 16000).shape == (16000,)


def test_half_the_data_chunk_warns_with_both_counts(full, tmp_path):
    half = tmp_path / "half.wav"
    half.write_bytes(full.read_bytes()[: 44 + 16000])
    with pytest.warns(TruncatedAudioWarning, match=r"declares 16000 frames but the file holds 8000 \(50%\)") as record:
        wave = load_audio(half, 16000)
    assert wave.shape == (8000,) and str(half) in str(record[0].message)


def test_random_bytes_after_a_valid_header_warn(full, tmp_path):
    noise = tmp_path / "noise.wav"
    noise.write_bytes(full.read_bytes()[:44] + os.urandom(1000))
    with pytest.warns(TruncatedAudioWarning, match="declares 16000 frames but the file holds 500"):
        load_audio(noise, 16000)


def test_streaming_headers_with_an_open_size_do_not_warn(full, tmp_path):
    data = bytearray(full.read_bytes())
    data[40:44] = (0xFFFFFFFF).to_bytes(4, "little")  # data chunk size left open by a streaming writer
    streamed = tmp_path / "streamed.wav"
    streamed.write_bytes(bytes(data))
    assert wav_declared_frames(streamed) is None


def test_an_empty_file_is_refused_naming_it(tmp_path):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype="float32"), 16000)
    with pytest.raises(AudioReadError, match=r"empty\.wav' holds no samples \(0 frames\)"):
        load_audio(empty, 16000)


def test_esc50_csv_with_only_a_header(tmp_path):
    root = make_esc50(tmp_path, clips_per_class_per_fold=1, classes=[0, 1], folds=(1, 2), seconds=0.2, seed=0)
    csv = root / "meta" / "esc50.csv"
    csv.write_text(csv.read_text().splitlines()[0] + "\n")
    with pytest.raises(MetadataError, match=r"esc50.csv lists no clips \(it has a header and no rows\)"):
        ESC50(root, sample_rate=16000)
