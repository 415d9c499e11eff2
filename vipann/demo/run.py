"""``vipann demo``: the whole method on the embedded default, offline, in minutes on a laptop.

1. The generated corpus (:mod:`vipann.datasets.synthetic`): the mini-AudioSet evaluation split,
   the 10-class transfer task (ESC-50 layout, 5 folds) and the out-of-distribution clips.
2. The demo zoo shipped inside the package (``det-demo``, ``drop-demo``, ``flip-demo``,
   ``detflip-demo``, loaded with :func:`vipann.from_pretrained`): Monte-Carlo predictions with the
   multi-label uncertainty decomposition, mAP/AUC/d-prime (the paper's Table 3), calibration,
   retention curves with 95 % CIs, reliability diagrams, ID-vs-OOD box plots and AUROC.
3. Transfer to the downstream task with the four strategies, fixed-feature and fine-tuned (Table 4),
   and the same networks from scratch (Table 5), through :func:`vipann.recipes.transfer.run_transfer`.
4. Calibration methods compared on the downstream task (:func:`vipann.recipes.compare.run_compare`):
   det, MC dropout, Flip, Det-Flip, a deep ensemble, SNGP, temperature scaling, post-hoc Laplace (last
   layer and fc1 + classifier) and IVON, with the calibration metrics, OOD AUROC, retention areas and
   what each costs (training and post-hoc fitting time, prediction time per clip, extra memory).
5. One self-contained HTML report (PNGs embedded) plus ``report.md``: every VI-PANN statement the run
   can test, next to the paired 95 % interval that decides it (holds / does not hold / inconclusive,
   see :mod:`vipann.demo.claims`), the tables with their Monte-Carlo samples and training budgets,
   and every figure with a numbered caption. The same seed gives the same report, byte for byte, but
   for the wall-clock costs of step 4 (seconds and milliseconds measured on the machine).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from vipann.demo.claims import MARGINS, RESAMPLES, pretrained_claims, stage_predictions, transfer_claims
from vipann.demo.methods import compare_section
from vipann.demo.report import checks_table, figure_caption, fmt, render_html, table4
from vipann.utils.atomic import write_json_atomic, write_text_atomic
from vipann.utils.outdirs import claim_output_dir

__all__ = ["SIZES", "TABLE1", "run_demo", "table1_rows", "transfer_settings"]

# The paper's Table 1 (ESC-50: C=50, 5 s; UrbanSound8K: C=10).
TABLE1 = {
    ("drop", 50): (103_340_786, 13_536_497_600),
    ("detflip", 50): (107_639_588, 13_545_306_248),
    ("flip", 50): (206_620_004, 26_653_313_032),
    ("drop", 10): (103_258_826, None),
    ("detflip", 10): (107_475_668, None),
    ("flip", 10): (206_456_084, None),
}
METHODS = ("det", "drop", "flip", "detflip")

# Sizes of a run. "full" is `vipann demo` (about two minutes on 2 CPU cores); "quick" is for tests.
MIN_COVERAGE = 1.0  # share of the classes an mAP retention level must cover to be read (and to decide a claim)
SIZES: dict[str, dict[str, Any]] = {
    "full": dict(
        eval_clips=200,
        per_fold=4,
        ood_clips=40,
        replications=1,  # one run: the retention bands are bootstrap intervals over clips
        samples=None,  # each zoo model's default_num_samples (10; det-demo 1)
        folds=[1],
        fixed_epochs=100,  # heads on cached features: ~40 epochs/s
        finetune_epochs=3,
        lr=3e-3,
        feature_draws=4,
        transfer_samples=5,
        transfer_replications=1,
        scratch=["det", "flip"],
        bootstrap=200,
        compare=dict(fixed_epochs=60, replications=1, ensemble_members=3, folds=[1]),
    ),
    "quick": dict(
        eval_clips=40,
        per_fold=2,
        ood_clips=12,
        replications=1,
        samples=3,
        folds=[1],
        fixed_epochs=10,
        finetune_epochs=1,
        lr=3e-3,
        feature_draws=2,
        transfer_samples=2,
        transfer_replications=1,
        scratch=["det"],
        bootstrap=50,
        compare=dict(fixed_epochs=3, replications=1, ensemble_members=2, folds=[1], sngp_features=16),
    ),
}


def table1_rows() -> list[tuple[str, int, int, int, int | None, int | None]]:
    """Recount Table 1 with vipann's ResNet54 (meta device: no weights, no compute).

    Returns:
        Rows ``(method, classes, params, paper_params, macs, paper_macs)``.
    """
    from vipann.models.profile import count_macs, count_parameters
    from vipann.zoo.factory import create_model

    rows = []
    for (method, classes), (paper_params, paper_macs) in TABLE1.items():
        model = create_model(f"{method}-resnet54", num_classes=classes, device="meta")
        macs = count_macs(model, 5.0, convention="paper").total if paper_macs is not None else None
        rows.append((method, classes, count_parameters(model), paper_params, macs, paper_macs))
    return rows


def _zoo_section(out: Path, eval_set, ood_set, size: dict[str, Any], seed: int, progress: bool):
    """Table 3's rows, the pre-trained models' claims and their figures ``(caption facts, path)``."""
    from vipann.evaluation import evaluate_runs, figure_titles, write_evaluation
    from vipann.inference.predict import predict
    from vipann.zoo.factory import from_pretrained

    waves = torch.stack([eval_set.load_waveform(i) for i in range(len(eval_set))])
    ood = torch.stack([ood_set.load_waveform(i) for i in range(len(ood_set))])
    rows, claims, figures, notes = [], [], [], []
    for method in METHODS:
        name = f"{method}-demo"
        model = from_pretrained(name)
        default = model.pretrained_cfg.default_num_samples
        samples = 1 if method == "det" else size["samples"] or default
        runs = 1 if method == "det" else size["replications"]

        def run(x, r, model=model, samples=samples):
            return predict(
                model, x, num_samples=samples, generator=seed * 101 + r, batch_size=64, progress=progress and r == 0
            ).probs

        probs = torch.stack([run(waves, r) for r in range(runs)])
        ood_probs = run(ood, 99)[None]
        evaluation = evaluate_runs(
            probs, eval_set.targets, multilabel=True, ood_probs=ood_probs, bootstrap=size["bootstrap"], seed=seed
        )
        directory = out / "pretrained" / name
        write_evaluation(evaluation, directory, probs=probs, targets=eval_set.targets, ood_probs=ood_probs, title=name)
        rows.append({"model": name, "samples": samples, "default": default, **evaluation.scalars})
        scored = {m: evaluation.uncertainty[m] for m in evaluation.retention}
        claims += pretrained_claims(
            name,
            probs[0].mean(0),
            eval_set.targets,
            scored,
            evaluation.ood_uncertainty,
            seed,
            MIN_COVERAGE,
            curves=evaluation.retention if runs == 1 else None,
        )
        notes += [f"{name}: {why}; it is neither plotted nor scored." for m, why in evaluation.skipped.items()]
        figures += _figure_list(evaluation, directory, figure_titles(name, True), len(ood))
    return rows, claims, figures, notes


def _figure_list(evaluation, directory: Path, titles: dict[str, str], n_ood: int) -> list[tuple[str, dict, Path]]:
    """``(title, caption facts, png)`` of an evaluation's figures, in report order."""
    multilabel = evaluation.multilabel
    first = next(iter(evaluation.retention.values()), None)
    if first is None or first.ci == "none":
        band = "no band (a single replication)"
    elif first.ci == "t":
        band = f"95 % Student-t interval over {first.values.shape[0]} prediction runs"
    else:
        band = f"95 % bootstrap {first.ci} interval over clips ({first.values.shape[0]} resamples)"
    random = "expected: flat at the accuracy of all clips" if not multilabel else "mean of 20 random rankings"
    facts = {
        "metric": "mAP" if multilabel else "accuracy",
        "band": band,
        "random": random,
        "coverage": MIN_COVERAGE,
        "multilabel": multilabel,
        "n_id": int(evaluation.scalars["clips"]),
        "n_ood": n_ood,
    }
    ties = sorted({res.ties for res in evaluation.retention.values()} - {"none"})
    facts["ties"] = ", ".join(ties)
    skipped_ood = {m: why for m, why in evaluation.skipped.items() if f"ood_auroc_{m}" not in evaluation.scalars}
    return [
        (
            titles["retention"],
            {**facts, "kind": "retention", "skipped": evaluation.skipped},
            directory / "retention.png",
        ),
        (titles["reliability"], {**facts, "kind": "reliability"}, directory / "reliability.png"),
        (titles["ood"], {**facts, "kind": "ood", "skipped": skipped_ood}, directory / "ood_boxplots.png"),
    ]


def transfer_settings(
    downstream_root: Path, ood_root: Path | None, size: dict[str, Any], seed: int, progress: bool
) -> dict[str, Any]:
    """The demo's transfer settings (:class:`~vipann.recipes.transfer.TransferConfig` fields).

    Shared by ``vipann demo`` and ``vipann example-data``, so the example model is trained exactly
    as the demo's transfer.

    Args:
        downstream_root: The generated transfer task (:func:`~vipann.datasets.synthetic.make_downstream`).
        ood_root: The generated out-of-distribution clips, or None.
        size: One of :data:`SIZES`.
        seed: Seed of every random draw.
        progress: Progress bars.

    Returns:
        Keyword arguments of ``TransferConfig`` (without ``out`` and ``strategies``).
    """
    return dict(
        dataset="synthetic_downstream",
        data_root=str(downstream_root),
        model="flip-demo",
        clip_seconds=2.0,
        batch_size=32,
        num_samples=size["transfer_samples"],
        replications=size["transfer_replications"],
        feature_draws=size["feature_draws"],
        ood_root=str(ood_root) if ood_root is not None else "",
        seed=seed,
        progress=progress,
        device="cpu",
        folds=size["folds"],
        fixed_epochs=size["fixed_epochs"],  # Table 5 gets Table 4's budget
        finetune_epochs=size["finetune_epochs"],
        lr=size["lr"],
        plots=False,  # the report draws the figures it shows (below); every number is written either way
        export=True,  # every trained model is a loadable directory: OUT/transfer/<strategy>/fold1/<stage>/export
    )


def _transfer_section(
    out: Path, downstream_root: Path, ood_root: Path, size: dict[str, Any], seed: int, progress: bool
):
    from vipann.recipes.transfer import TransferConfig, run_transfer

    common = transfer_settings(downstream_root, ood_root, size, seed, progress)
    transfer = run_transfer(TransferConfig(out=str(out / "transfer"), strategies=list(METHODS), **common))
    scratch = run_transfer(
        TransferConfig(out=str(out / "scratch"), strategies=size["scratch"], from_scratch=True, **common)
    )
    return transfer, scratch, TransferConfig(out=str(out / "transfer"), **common)


def _transfer_figures(out: Path, size: dict[str, Any], seed: int) -> tuple[list[tuple[str, dict, Path]], list[str]]:
    """Figures of every strategy's fine-tuned stage on the first test fold (from its saved predictions), and notes."""
    from vipann.evaluation import evaluate_runs, figure_titles, write_figures

    figures, notes = [], []
    fold = size["folds"][0]
    for strategy in METHODS:
        directory = out / "transfer" / strategy / f"fold{fold}" / "finetuned"
        pred = stage_predictions(directory)
        if pred is None:
            continue
        evaluation = evaluate_runs(
            pred["probs"], pred["targets"], multilabel=False, ood_probs=pred.get("ood_probs"), seed=seed
        )
        subject = f"transfer {strategy}, fine-tuned, fold {fold}"
        write_figures(evaluation, directory, subject)
        notes += [f"{subject}: {why}; it is neither plotted nor scored." for why in evaluation.skipped.values()]
        n_ood = pred["ood_probs"].shape[2] if "ood_probs" in pred else 0
        figures += _figure_list(evaluation, directory, figure_titles(subject, False), n_ood)
    return figures, notes


def _claims_note(claims) -> list[str]:
    counts = {v: sum(c.verdict == v for c in claims) for v in ("holds", "does not hold", "inconclusive")}
    differ = sum(c.agrees is False for c in claims)
    return [
        f"{len(claims)} statements tested: {counts['holds']} hold, {counts['does not hold']} do not hold, "
        f"{counts['inconclusive']} are inconclusive; {differ} reach the opposite of VI-PANN's finding.",
        "",
        "How a claim is decided: by the 95 % interval of a paired statistic, never by comparing two numbers. "
        "**holds**: the whole interval is above 0; **does not hold**: the whole interval is below the smallest "
        f"effect that matters ({MARGINS['retention']} mAP or accuracy for retention areas, {MARGINS['auroc']} for "
        f"AUROC - 0.5, {MARGINS['accuracy']} for accuracy differences), so the effect is at most negligible; "
        "**inconclusive**: anything else. A claim that something stays the same holds when the interval lies "
        f"within ±{MARGINS['auroc']} and does not hold when it excludes 0.",
        "",
        "- Retention gain: the mean, over the retention levels from the first one that keeps at least 10 clips and "
        f"(mAP) a kept positive of {'every' if MIN_COVERAGE >= 1 else f'{MIN_COVERAGE:.0%} of the'} class"
        f"{'' if MIN_COVERAGE >= 1 else 'es'} with a positive, of the uncertainty-ranked curve minus "
        "the random-discarding curve, on a 5 % grid; both curves on the same bootstrap resamples of the clips "
        f"({RESAMPLES['retention']} for mAP, {RESAMPLES['other']} for accuracy; over runs and folds too where "
        "there are several). The random curve is exact for accuracy and the mean of 8 random rankings for mAP.",
        f"- OOD AUROC - 0.5: in-distribution and OOD clips resampled separately ({RESAMPLES['other']} resamples).",
        f"- Accuracy differences: per-clip, on the same test clips ({RESAMPLES['other']} paired resamples).",
    ]


def _epochs(n: int) -> str:
    return f"{n} epoch{'' if n == 1 else 's'}"


def _tables(
    zoo_rows: list[dict], transfer: dict, scratch: dict, config, size: dict[str, Any], quick: bool
) -> list[str]:
    samples = sorted({r["samples"] for r in zoo_rows if not r["model"].startswith("det-")})
    default = sorted({r["default"] for r in zoo_rows if not r["model"].startswith("det-")})
    why = (
        "each model's `default_num_samples`, what `vipann.predict` uses when not told otherwise, so these are the "
        "numbers a user of the zoo gets"
        if samples == default
        else f"fewer than the models' default of {'/'.join(map(str, default))} to keep the quick run short"
    )
    md = [
        "## Table 3: the demo zoo on the mini-AudioSet eval split",
        "",
        f"Monte-Carlo samples: S = {'/'.join(map(str, samples))} per clip for drop-, flip- and detflip-demo, {why}; "
        "det-demo is deterministic and uses 1. ECE (marginal): the mean over classes of each class's ECE; "
        "MCS: signed miscalibration (mean confidence minus accuracy over all clip-class pairs; > 0: over-confident); "
        "AURC / AUGRC: areas under the (generalized) risk-coverage curve with the entropy as the ranking and the "
        "Hamming loss at 0.5 as the risk (lower is better).",
        "",
        "| model | MC samples | mAP | AUC | d-prime | ECE | ECE (marginal) | MCS | AURC | AUGRC | entropy | aleatoric "
        "| epistemic | OOD AUROC (entropy) | OOD AUROC (epistemic) |",
        "|---" * 15 + "|",
    ]
    for r in zoo_rows:
        keys = ("mAP", "AUC", "d_prime", "ECE", "ECE_marginal", "MCS", "AURC_entropy", "AUGRC_entropy")
        keys += ("mean_entropy", "mean_aleatoric", "mean_epistemic", "ood_auroc_entropy", "ood_auroc_epistemic")
        md.append(f"| {r['model']} | {r['samples']} | " + " | ".join(fmt(r.get(k)) for k in keys) + " |")
    folds = size["folds"]
    over = f"test fold {folds[0]}" if len(folds) == 1 else f"mean ± std over test folds {folds}"
    per_fold = size["per_fold"]
    budget = (
        f"Training budget (Tables 4 and 5 alike): the head for {_epochs(config.fixed_epochs)} on cached backbone "
        f"features at lr {config.lr:g} (fixed-feature), then all layers for {_epochs(config.finetune_epochs)} at lr "
        f"{config.lr / config.finetune_lr_factor:g} (fine-tuned); batch {config.batch_size}; "
        f"{40 * per_fold} training clips (4 folds x 10 classes x {per_fold}), {10 * per_fold} test clips per fold."
    )
    md += [
        "",
        f"## Table 4: transfer to the downstream task: accuracy of the fixed-feature and fine-tuned models, and the "
        f"fine-tuned models' calibration (ECE, MCS), AURC and mean epistemic uncertainty ({over})",
        "",
        f"Monte-Carlo samples: S = {config.num_samples} per clip for the stochastic strategies (det: 1), the "
        f"transfer recipe's `num_samples` of this run, fewer than the zoo's 10 to keep the demo at about two "
        f"minutes on 2 CPU cores; {config.feature_draws} cached Monte-Carlo feature draws per training clip train "
        "the fixed-feature heads of stochastic backbones. MCS: mean confidence minus accuracy (> 0: over-confident); "
        "AURC: area under the risk-coverage curve with the entropy as the ranking and the top-1 error as the risk "
        "(lower is better). " + budget,
        "",
    ]
    md += table4(
        transfer,
        [
            ("Fixed", "fixed", "accuracy"),
            ("Fine-Tuned", "finetuned", "accuracy"),
            ("ECE (fine-tuned)", "finetuned", "ECE"),
            ("MCS (fine-tuned)", "finetuned", "MCS"),
            ("AURC (fine-tuned)", "finetuned", "AURC_entropy"),
            ("epistemic (fine-tuned)", "finetuned", "mean_epistemic"),
        ],
        "strategy",
    )
    md += [
        "",
        f"## Table 5: the same networks from random weights, with Table 4's training budget ({over})",
        "",
        "The first column trains only the head on the frozen random backbone (Table 4's fixed-feature stage); the "
        "second then trains all layers, which is training from scratch as in VI-PANN's Table 5. " + budget,
        "",
    ]
    md += table4(
        scratch,
        [
            ("head only, random frozen backbone", "fixed", "accuracy"),
            ("all layers (from scratch)", "finetuned", "accuracy"),
            ("ECE (all layers)", "finetuned", "ECE"),
            ("epistemic (all layers)", "finetuned", "mean_epistemic"),
        ],
        "strategy (from scratch)",
    )
    return md


def run_demo(
    out: str | os.PathLike[str] = "vipann-demo", quick: bool = False, seed: int = 0, progress: bool = True
) -> int:
    """Run the demo and write ``OUT/report.html``, ``OUT/report.md`` and ``OUT/checks.json``.

    Args:
        out: Output directory.
        quick: Smaller sizes (for tests and a first look).
        seed: Seed of the corpus and of every random draw; the same seed gives the same report.
        progress: Progress bars.

    Returns:
        0 (the report states which claims hold; a run where some do not is still a valid run).

    Raises:
        vipann.utils.outdirs.OutputDirError: When ``out`` holds files the demo did not write (the
            previous content of a demo's own output directory is replaced).
    """
    from vipann.datasets import UnlabelledFolder
    from vipann.datasets.synthetic import MiniAudioSet, describe, make_downstream, make_ood

    start = time.perf_counter()
    # The demo replaces its own earlier output, and never touches a folder of anything else.
    out = claim_output_dir(out, "demo", clear=True, recognise=lambda d: (d / "checks.json").is_file())
    size = SIZES["quick" if quick else "full"]
    cache = Path(os.environ.get("VIPANN_CACHE_DIR", Path.home() / ".cache" / "vipann")) / "synthetic"
    print("[1/5] generating the corpus (cached after the first run) ...", flush=True)
    eval_set = MiniAudioSet(cache, split="eval", num_clips=size["eval_clips"], seed=seed)
    per_fold = size["per_fold"]
    downstream_root = make_downstream(
        cache / f"downstream-seed{seed}-{per_fold}x5", seed=seed, clips_per_class_per_fold=per_fold
    )
    ood_clips = size["ood_clips"]
    ood_root = make_ood(cache / f"ood-seed{seed}-{ood_clips}", seed=seed, num_clips=ood_clips)
    ood_set = UnlabelledFolder(ood_root, sample_rate=16000, clip_seconds=2.0)
    print("[2/5] the demo zoo on the mini-AudioSet eval split ...", flush=True)
    zoo_rows, claims, figures, notes = _zoo_section(out, eval_set, ood_set, size, seed, progress)
    print("[3/5] transfer to the downstream task (4 strategies, fixed-feature and fine-tuned) ...", flush=True)
    transfer, scratch, config = _transfer_section(out, downstream_root, ood_root, size, seed, progress)
    claims += transfer_claims(out / "transfer", out / "scratch", list(METHODS), size["scratch"], size["folds"], seed)
    transfer_figures, transfer_notes = _transfer_figures(out, size, seed)
    figures += transfer_figures
    notes += transfer_notes
    print("[4/5] calibration methods compared (det, drop, flip, detflip, ensemble, SNGP, T, Laplace, IVON) ...")
    compared = compare_section(out, size, seed, progress)
    print("[5/5] writing the report ...", flush=True)
    md = [
        "# vipann demo",
        "",
        "Everything below was computed offline on generated audio by the models that ship with vipann "
        f"({'quick run' if quick else 'full run'}, seed {seed}); the same seed gives the same report but for the "
        "measured run times in the methods-compared table.",
        "",
        "## VI-PANN's statements, tested on this run",
        "",
        *checks_table(claims),
        "",
        *_claims_note(claims),
        "",
        "Measures that are not scored:",
        *[f"- {n}" for n in notes or ["none"]],
        "",
        "A multi-label (sigmoid) tagger that detects no event in an OOD clip is confident about 'no event', so "
        "multi-label entropy is a weak OOD score for pre-trained taggers.",
        "",
        *_tables(zoo_rows, transfer, scratch, config, size, quick),
        *compared,
        "",
        "## Table 1: VI-PANN ResNet54 recounted by vipann (exact)",
        "",
        "| method | classes | params | paper | MACs 5 s | paper |",
        "|---|---|---|---|---|---|",
    ]
    for method, classes, params, paper, macs, paper_macs in table1_rows():
        md.append(
            f"| {method} | {classes} | {params:,} | {paper:,} | {'–' if macs is None else f'{macs:,}'} | "
            f"{'–' if paper_macs is None else f'{paper_macs:,}'} |"
        )
    md += ["", "## The generated sounds", "", *describe().splitlines(), ""]
    md += [
        "## Figures",
        "",
        "Figures are in `pretrained/<model>/` and `transfer/<strategy>/fold<k>/finetuned/`; every Monte-Carlo "
        "prediction is in `predictions.safetensors` next to the numbers (`metrics.json`, `retention.csv`), so every "
        "figure and table can be recomputed. Every transferred model is a model directory, "
        "`transfer/<strategy>/fold<k>/<stage>/export`, that `vipann.from_pretrained` loads as `local-dir:PATH`.",
    ]
    captions = [
        (figure_caption(i, title, facts["kind"], facts), path) for i, (title, facts, path) in enumerate(figures, 1)
    ]
    write_text_atomic(
        out / "report.md", "\n".join([*md, "", *[f"- {c} (`{p.relative_to(out)}`)" for c, p in captions]]) + "\n"
    )
    write_text_atomic(out / "report.html", render_html(md, captions))
    write_json_atomic(out / "checks.json", [c.as_dict() for c in claims])
    elapsed = time.perf_counter() - start
    print(f"report: {out / 'report.html'} ({elapsed:.0f} s)")
    for c in claims:
        print(f"  [{c.verdict}] {c.claim}: {c.interval.text()} (VI-PANN: {c.expected})")
    return 0
