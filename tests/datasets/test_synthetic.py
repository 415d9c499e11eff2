import hashlib
import re

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from vipann.datasets import ESC50, UnlabelledFolder
from vipann.datasets import synthetic as syn
from vipann.datasets.labels import get_labels
from vipann.datasets.synthetic import (
    AUDIOSET_CLASSES,
    DOWNSTREAM_CLASSES,
    DOWNSTREAM_ESC50_CATEGORIES,
    OOD_CLASS,
    MiniAudioSet,
    SyntheticDownstream,
    corpus,
    describe,
    make_downstream,
    make_ood,
    render_clip,
    synth_event,
)
from vipann.models.frontend import FrontendConfig, LogMelFrontend

SR = 16000
ALL_CLASSES = (*AUDIOSET_CLASSES, *DOWNSTREAM_CLASSES, OOD_CLASS)


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.wav"))}


def _count_calls(monkeypatch, name):
    calls = []
    original = getattr(syn, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(syn, name, counted)
    return calls


def test_class_lists():
    assert len(AUDIOSET_CLASSES) == 20 and len(DOWNSTREAM_CLASSES) == 10
    assert len(set(ALL_CLASSES)) == len(ALL_CLASSES)
    assert not any(";" in name or "|" in name or "@" in name for name in ALL_CLASSES)
    esc50 = get_labels("esc50")
    assert set(DOWNSTREAM_ESC50_CATEGORIES) == set(DOWNSTREAM_CLASSES)
    assert set(DOWNSTREAM_ESC50_CATEGORIES.values()) <= set(esc50)
    assert len(set(DOWNSTREAM_ESC50_CATEGORIES.values())) == 10 and "engine" not in DOWNSTREAM_ESC50_CATEGORIES.values()


@pytest.mark.parametrize("name", ALL_CLASSES)
def test_every_class_synthesises_bounded_audio(name):
    for length in (1, 37, 4000, 2 * SR):
        wave = synth_event(name, length, SR, np.random.default_rng(length))
        assert wave.dtype == np.float32 and wave.shape == (length,)
        assert np.isfinite(wave).all() and np.abs(wave).max() <= 1.0
    assert np.abs(wave).max() == pytest.approx(1.0)
    again = synth_event(name, 2 * SR, SR, np.random.default_rng(2 * SR))
    assert np.array_equal(wave, again)
    assert not np.array_equal(wave, synth_event(name, 2 * SR, SR, np.random.default_rng(1)))


def test_synth_event_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown synthetic class 'dog'"):
        synth_event("dog", 100, SR, np.random.default_rng(0))
    with pytest.raises(ValueError, match="positive"):
        synth_event("pure tone", 0, SR, np.random.default_rng(0))


def test_render_clip_is_deterministic_and_valid():
    wave, events = render_clip(5, seed=3)
    again, same_events = render_clip(5, seed=3)
    assert wave.dtype == np.float32 and wave.shape == (2 * SR,)
    assert np.array_equal(wave, again) and events == same_events
    assert np.abs(wave).max() <= 0.99 + 1e-6
    assert not np.array_equal(wave, render_clip(5, seed=4)[0])
    assert not np.array_equal(wave, render_clip(5, seed=3, split="eval")[0])
    assert not np.array_equal(wave, render_clip(6, seed=3)[0])
    for event in events:
        assert event.name in AUDIOSET_CLASSES and event.onset >= 0 and event.onset + event.duration <= 2.0 + 1e-9
    with pytest.raises(ValueError, match="split"):
        render_clip(0, split="test")
    with pytest.raises(ValueError, match="non-negative"):
        render_clip(0, seed=-1)


def test_event_counts_cover_one_to_three_distinct_classes():
    events = [render_clip(i)[1] for i in range(40)]
    assert {len(e) for e in events} == {1, 2, 3}
    assert all(len({x.name for x in e}) == len(e) for e in events)


def test_same_seed_gives_identical_files_and_clips_do_not_depend_on_the_count(tmp_path):
    first = MiniAudioSet(tmp_path / "a", num_clips=6, seed=7)
    second = MiniAudioSet(tmp_path / "b", num_clips=6, seed=7)
    assert first.folder != second.folder and _digests(first.folder) == _digests(second.folder)
    assert (first.folder / "labels.csv").read_bytes() == (second.folder / "labels.csv").read_bytes()
    fewer = _digests(MiniAudioSet(tmp_path / "c", num_clips=4, seed=7).folder)
    assert fewer == {k: v for k, v in _digests(first.folder).items() if k in fewer} and len(fewer) == 4
    other = _digests(MiniAudioSet(tmp_path / "d", num_clips=6, seed=8).folder)
    assert all(other[k] != v for k, v in _digests(first.folder).items())


def test_multilabel_targets_match_the_events(tmp_path):
    ds = MiniAudioSet(tmp_path, split="eval", num_clips=12, seed=1)
    assert ds.multilabel and ds.class_names == AUDIOSET_CLASSES and len(ds) == 12
    assert ds.dataset_name == "mini_audioset" and ds.folder.parent == tmp_path
    targets = ds.targets
    assert targets.shape == (12, 20) and set(targets.sum(1).tolist()) <= {1.0, 2.0, 3.0}
    table = pd.read_csv(ds.folder / "labels.csv", dtype=str, keep_default_na=False)
    for i in range(len(ds)):
        expected, events = render_clip(i, split="eval", seed=1)
        positives = {AUDIOSET_CLASSES[k] for k in torch.nonzero(targets[i]).flatten().tolist()}
        assert positives == {e.name for e in events}
        assert table.events[i].count("@") == 2 * len(events)
        wave, target = ds[i]
        assert torch.equal(target, targets[i]) and wave.shape == (2 * SR,)
        # 16-bit rounding is the only difference between the generated and the stored audio.
        assert np.abs(wave.numpy() - expected).max() <= 2.0 / 32768


def test_defaults_and_cache_location(tmp_path, monkeypatch):
    monkeypatch.setenv("VIPANN_CACHE_DIR", str(tmp_path / "cache"))
    ds = MiniAudioSet(split="eval", num_clips=2, seed=0)
    assert ds.folder.parent == tmp_path / "cache" / "synthetic"
    assert ds.folder.name == f"mini-audioset-v{syn.GENERATOR_VERSION}-seed0-16000hz-2s-eval2"
    with pytest.raises(ValueError, match="split must be one of"):
        MiniAudioSet(tmp_path, split="test")
    with pytest.raises(ValueError, match="positive"):
        MiniAudioSet(tmp_path, num_clips=0)


def _logmel_features(waves):
    frontend = LogMelFrontend(FrontendConfig(sample_rate=SR, window_size=512, hop_size=160, mel_bins=64, fmax=8000))
    with torch.no_grad():
        spec = frontend(torch.from_numpy(np.stack(waves))).squeeze(1).numpy()
    spec = spec if spec.shape[-1] == 64 else spec.swapaxes(-1, -2)  # (clips, frames, mels)
    spec = spec - spec.max(axis=(1, 2), keepdims=True)
    feats = np.concatenate([spec.mean(1), spec.std(1), np.abs(np.diff(spec, axis=1)).mean(1)], axis=1)
    return (feats - feats.mean(0)) / (feats.std(0) + 1e-6)


@pytest.mark.parametrize(("names", "minimum"), [(AUDIOSET_CLASSES, 0.5), (DOWNSTREAM_CLASSES, 0.6)])
def test_classes_are_distinguishable_by_a_nearest_centroid_classifier(names, minimum):
    per_class = 4
    waves = [
        synth_event(c, SR, SR, np.random.default_rng([k, j])) for k, c in enumerate(names) for j in range(per_class)
    ]
    feats = _logmel_features(waves)
    labels = np.repeat(np.arange(len(names)), per_class)
    fit = np.tile(np.arange(per_class) < per_class // 2, len(names))
    centroids = np.stack([feats[fit & (labels == k)].mean(0) for k in range(len(names))])
    predicted = ((feats[~fit][:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    accuracy = (predicted == labels[~fit]).mean()
    assert accuracy >= minimum, f"nearest-centroid accuracy {accuracy:.2f} (chance {1 / len(names):.2f})"


def test_downstream_is_esc50_layout_and_loads_both_ways(tmp_path):
    root = make_downstream(tmp_path / "esc", seed=2, clips_per_class_per_fold=2, clip_seconds=1.0)
    meta = pd.read_csv(root / "meta" / "esc50.csv", dtype=str)
    assert list(meta.columns) == ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
    assert len(meta) == 100 and meta.filename.is_monotonic_increasing
    for row in meta.itertuples():
        assert row.filename == f"{row.fold}-{row.src_file}-{row.take}-{row.target}.wav"
        assert (root / "audio" / row.filename).is_file()
        info = sf.info(str(root / "audio" / row.filename))
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (SR, 1, "PCM_16", SR)
    esc = ESC50(root, sample_rate=SR, clip_seconds=1.0)
    assert esc.folds == [1, 2, 3, 4, 5] and esc.num_classes == 50 and len(esc) == 100
    esc50_names = get_labels("esc50")
    assert {esc50_names[t] for t in esc.targets.tolist()} == set(DOWNSTREAM_ESC50_CATEGORIES.values())
    ds = SyntheticDownstream(root, clip_seconds=1.0)
    assert ds.class_names == DOWNSTREAM_CLASSES and ds.folds == [1, 2, 3, 4, 5] and not ds.multilabel
    assert torch.bincount(ds.targets).tolist() == [10] * 10
    by_file = {r.clip_id.removeprefix("audio/"): DOWNSTREAM_CLASSES[r.label] for r in ds.records}
    for record in esc.records:
        assert DOWNSTREAM_ESC50_CATEGORIES[by_file[record.clip_id]] == esc50_names[record.label]
    train, test = ds.split(test_fold=3)
    assert len(train) == 80 and len(test) == 20 and {r.fold for r in test.records} == {3}
    wave, target = test[0]
    assert wave.shape == (SR,) and target.dtype == torch.long
    assert torch.equal(wave, esc.load_waveform(esc.records.index(next(r for r in esc.records if r.fold == 3))))


def test_ood_folder_loads_unlabelled(tmp_path):
    root = make_ood(tmp_path / "ood", seed=0, num_clips=3)
    ds = UnlabelledFolder(root, sample_rate=SR, clip_seconds=2.0)
    assert len(ds) == 3 and ds.targets.tolist() == [-1, -1, -1] and not ds.labelled
    wave, _ = ds[1]
    assert wave.shape == (2 * SR,) and 0 < wave.abs().max() <= 1.0
    # Muffled: almost all the energy is below 1.5 kHz.
    power = np.abs(np.fft.rfft(wave.numpy())) ** 2
    assert power[: 1500 * 2].sum() > 0.95 * power.sum()


def test_second_call_reuses_the_files(tmp_path, monkeypatch):
    renders = _count_calls(monkeypatch, "render_clip")
    first = MiniAudioSet(tmp_path, num_clips=3)
    stamps = {p: p.stat().st_mtime_ns for p in first.folder.rglob("*")}
    assert len(renders) == 3
    second = MiniAudioSet(tmp_path, num_clips=3)
    assert len(renders) == 3 and second.folder == first.folder
    assert {p: p.stat().st_mtime_ns for p in second.folder.rglob("*")} == stamps
    downstream = _count_calls(monkeypatch, "_downstream_clip")
    ood = _count_calls(monkeypatch, "_ood_clip")
    for _ in range(2):
        make_downstream(tmp_path / "esc", clips_per_class_per_fold=1, clip_seconds=0.5)
        make_ood(tmp_path / "ood", num_clips=2, clip_seconds=0.5)
    assert len(downstream) == 50 and len(ood) == 2


def test_failed_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    original = syn.render_clip

    def failing(index, **kwargs):
        if index == 2:
            raise RuntimeError("disk on fire")
        return original(index, **kwargs)

    monkeypatch.setattr(syn, "render_clip", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        MiniAudioSet(tmp_path / "sets", num_clips=4)
    assert list((tmp_path / "sets").iterdir()) == []
    monkeypatch.setattr(syn, "_ood_clip", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt()))
    (tmp_path / "ood").mkdir()
    with pytest.raises(KeyboardInterrupt):
        make_ood(tmp_path / "ood", num_clips=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ood", "sets"] and not any((tmp_path / "ood").iterdir())
    monkeypatch.setattr(syn, "render_clip", original)
    assert len(MiniAudioSet(tmp_path / "sets", num_clips=4)) == 4


def test_a_concurrent_builder_that_finishes_first_wins(tmp_path, monkeypatch):
    original = syn._ood_clip
    target = tmp_path / "ood"

    def racing(*args):
        if not target.exists():  # another process completes the same folder meanwhile
            monkeypatch.setattr(syn, "_ood_clip", original)
            make_ood(target, num_clips=2, clip_seconds=0.5)
            monkeypatch.setattr(syn, "_ood_clip", racing)
        return original(*args)

    monkeypatch.setattr(syn, "_ood_clip", racing)
    assert make_ood(target, num_clips=2, clip_seconds=0.5) == target
    assert [p.name for p in tmp_path.iterdir()] == ["ood"]
    assert len(UnlabelledFolder(target, SR, 0.5)) == 2


def test_foreign_folders_are_kept_and_stale_generated_ones_replaced(tmp_path, caplog):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="busy"):
        make_ood(tmp_path / "busy", num_clips=1)
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"]
    make_ood(tmp_path / "ood", num_clips=3, clip_seconds=0.5)
    make_ood(tmp_path / "ood", seed=1, num_clips=1, clip_seconds=0.5)
    assert "regenerating" in caplog.text
    assert sorted(p.name for p in (tmp_path / "ood").iterdir()) == ["manifest.json", "ood-00000.wav"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "ood"]
    expected = syn._ood_clip(1, 0, SR, 0.5)[0]
    assert np.abs(sf.read(tmp_path / "ood" / "ood-00000.wav")[0] - expected).max() <= 2.0 / 32768


def test_corpus_builds_every_part_once(tmp_path, monkeypatch):
    sizes = {"train_clips": 4, "eval_clips": 2, "clips_per_class_per_fold": 1, "ood_clips": 2, "clip_seconds": 0.5}
    c = corpus(tmp_path, seed=1, **sizes)
    assert (len(c.train), len(c.eval), len(c.downstream), len(c.ood)) == (4, 2, 50, 2)
    assert c.train.split == "train" and c.eval.split == "eval" and c.train.clip_samples == SR // 2
    assert c.downstream_root.parent == tmp_path and c.ood_root.parent == tmp_path
    assert c.downstream.num_classes == 10 and c.ood.targets.tolist() == [-1, -1]
    renders = _count_calls(monkeypatch, "render_clip")
    again = corpus(tmp_path, seed=1, **sizes)
    assert renders == [] and again.downstream_root == c.downstream_root
    monkeypatch.setenv("VIPANN_CACHE_DIR", str(tmp_path / "cache"))
    assert corpus(seed=1, **sizes).root == tmp_path / "cache" / "synthetic"


def test_describe_lists_every_class():
    table = describe()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == len(ALL_CLASSES)
    for name in ALL_CLASSES:
        assert re.search(rf"\| {re.escape(name)}( \(|\s\|)", table)
    assert "ESC-50 `siren`" in table
    assert not re.search(r"\| (\d+(?:\.\d+)?)[-–]\1 \|", table)  # no "2-2": a fixed duration is one number
    assert "| 2 |" in table  # the OOD clips last exactly 2 s


def test_packaged_label_list_matches_the_generator():
    from vipann.datasets.labels import LABEL_SETS

    if "synthetic" not in LABEL_SETS:
        pytest.skip("no 'synthetic' label set registered")
    assert get_labels("synthetic") == AUDIOSET_CLASSES
