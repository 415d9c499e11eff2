"""The prediction and evaluation subcommands of the ``vipann`` CLI (``predict``, ``evaluate``, ``retention``)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

__all__ = ["add_commands", "positive_int"]

# What `vipann evaluate` / `vipann retention` write (write_evaluation), so an older output without
# the marker file is still recognised as theirs.
_EVALUATION_FILES = frozenset(
    {
        "metrics.json",
        "retention.csv",
        "predictions.safetensors",
        "retention.png",
        "reliability.png",
        "ood_boxplots.png",
    }
)


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (``-n 0`` or ``--top-k -1`` is refused, never replaced by a default).

    Args:
        text: The argument.

    Returns:
        The integer.

    Raises:
        argparse.ArgumentTypeError: If it is not an integer >= 1.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _claim(out: str, command: str) -> Path:
    from vipann.utils.outdirs import claim_output_dir

    def earlier_output(directory: Path) -> bool:
        return all(p.name in _EVALUATION_FILES for p in directory.iterdir())

    return claim_output_dir(out, command, recognise=earlier_output)


def _load_model(source: str, device: str | None):
    from vipann.utils.devices import check_device
    from vipann.zoo.factory import from_pretrained
    from vipann.zoo.registry import get_pretrained_cfg, is_model

    if device is not None:
        check_device(device)  # before anything is loaded: "no CUDA" is one clear line
    if is_model(source) and get_pretrained_cfg(source).weights == "none":
        raise ValueError(f"{source} has no trained weights; give a trained model (a demo model, local-dir:, hf-hub:)")
    return from_pretrained(source, device=device)


def _predict_file(model, path: str, samples: int, args: argparse.Namespace) -> dict:
    """One file's result row; raises the library's errors (unreadable, empty or invalid audio)."""
    from vipann.datasets import load_audio
    from vipann.inference.predict import predict

    wave = load_audio(path, model.sample_rate)
    result = predict(model, wave, num_samples=samples, generator=args.seed)
    return {
        "file": str(path),
        "num_samples": samples,
        "total": float(result.total[0]),
        "aleatoric": float(result.aleatoric[0]),
        "epistemic": float(result.epistemic[0]),
        "top": [{"label": label, "mean": mean, "std": std} for label, mean, std in result.top_k(args.top_k)[0]],
    }


def _cmd_predict(args: argparse.Namespace) -> int:
    from vipann.datasets import AudioReadError
    from vipann.utils.entry import is_library_error

    model = _load_model(args.model, args.device)
    samples = args.num_samples if args.num_samples is not None else model.pretrained_cfg.default_num_samples
    failures, rows = 0, []
    for path in args.files:
        # Every readable file gets its result; a bad one gets an error naming it, and the others go on.
        try:
            row = _predict_file(model, path, samples, args)
        except Exception as exc:
            if not (isinstance(exc, AudioReadError) or is_library_error(exc)):
                raise
            message = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            print(f"vipann predict: error: {message}", file=sys.stderr)
            failures += 1
            continue
        rows.append(row)
        if not (args.json or args.csv):
            print(
                f"{path}  (S={samples}; total {row['total']:.3f}, aleatoric {row['aleatoric']:.3f}, "
                f"epistemic {row['epistemic']:.3f} nats)"
            )
            for item in row["top"]:
                print(f"  {item['label']:<40s} {item['mean']:.3f} ± {item['std']:.3f}")
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["file", "rank", "label", "mean", "std", "total", "aleatoric", "epistemic"])
        for row in rows:
            for rank, item in enumerate(row["top"], 1):
                writer.writerow(
                    [
                        row["file"],
                        rank,
                        item["label"],
                        f"{item['mean']:.6f}",
                        f"{item['std']:.6f}",
                        f"{row['total']:.6f}",
                        f"{row['aleatoric']:.6f}",
                        f"{row['epistemic']:.6f}",
                    ]
                )
    if failures:
        print(f"vipann predict: {failures} of {len(args.files)} file(s) failed", file=sys.stderr)
    return 1 if failures else 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from vipann.datasets import get_dataset
    from vipann.evaluation import evaluate_runs, write_evaluation
    from vipann.inference.predict import predict

    model = _load_model(args.model, args.device)
    kwargs = {"sample_rate": model.sample_rate}
    if args.clip_seconds:
        kwargs["clip_seconds"] = args.clip_seconds
    dataset = get_dataset(args.dataset, args.data_root, **kwargs)
    if args.folds:
        dataset = dataset.subset([int(f) for f in args.folds.split(",")])
    if dataset.num_classes != model.num_classes:
        raise ValueError(
            f"{args.dataset} has {dataset.num_classes} classes but the model {model.num_classes}: evaluate a model "
            f"trained on {args.dataset}'s classes (the transfer recipe, finetune/finetune.py, makes one; "
            "`vipann example-data DIR` writes one for the demo's synthetic_downstream task)"
        )
    _claim(args.out, "evaluate")  # before the work: a folder of anything else is refused
    waves = torch.stack([dataset.load_waveform(i) for i in range(len(dataset))])
    samples = args.num_samples if args.num_samples is not None else model.pretrained_cfg.default_num_samples
    runs = 1 if model.method == "det" else args.replications
    probs = torch.stack(
        [
            predict(
                model,
                waves,
                num_samples=samples,
                generator=args.seed + r,
                multilabel=dataset.multilabel,
                window_seconds=waves.shape[-1] / model.sample_rate,
                progress=True,
            ).probs
            for r in range(runs)
        ]
    ).cpu()
    evaluation = evaluate_runs(
        probs, dataset.targets, multilabel=dataset.multilabel, interval=args.interval, classes=args.classes
    )
    write_evaluation(
        evaluation,
        args.out,
        probs=probs,
        targets=dataset.targets,
        clip_ids=[r.clip_id for r in dataset.records],
        title=args.model,
    )
    print(json.dumps({k: round(v, 4) for k, v in evaluation.scalars.items()}, indent=2))
    print(f"written to {args.out}")
    return 0


def _cmd_retention(args: argparse.Namespace) -> int:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from vipann.evaluation import evaluate_runs, write_evaluation

    path = Path(args.predictions)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (a predictions.safetensors written by vipann)")
    try:
        tensors = load_file(str(path))
    except SafetensorError as exc:
        raise ValueError(
            f"{path} is not a safetensors file ({exc}); give the predictions.safetensors that vipann evaluate or "
            "a recipe wrote next to metrics.json"
        ) from None
    _claim(args.out, "retention")
    if "probs" not in tensors or "targets" not in tensors:
        raise ValueError(f"{path} lacks 'probs' or 'targets'; it is not a vipann predictions file")
    probs, targets = tensors["probs"], tensors["targets"]
    multilabel = targets.dim() == 2
    evaluation = evaluate_runs(
        probs,
        targets,
        multilabel=multilabel,
        ood_probs=tensors.get("ood_probs"),
        interval=args.interval,
        classes=args.classes,
    )
    write_evaluation(evaluation, args.out, title=path.parent.name)
    for name, result in evaluation.retention.items():
        half = int((result.fractions - 0.5).abs().argmin())
        print(
            f"{name:>10s}: area {result.area:.4f}  ({result.metric} {float(result.mean[-1]):.4f} at "
            f"{100 * float(result.fractions[-1]):g} %, {float(result.mean[half]):.4f} at "
            f"{100 * float(result.fractions[half]):g} %; 95 % {result.ci} band)"
        )
    for name, why in evaluation.skipped.items():
        print(f"{name:>10s}: not scored: {why}")
    print(f"written to {args.out}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``predict``, ``evaluate`` and ``retention`` on the ``vipann`` parser.

    Args:
        sub: The subparsers object of the main parser.
    """
    p = sub.add_parser("predict", help="top labels with uncertainty for audio files")
    p.add_argument("files", nargs="+", help="audio files (any format libsndfile reads)")
    p.add_argument("-m", "--model", required=True, help="registry name or source (local-dir:..., hf-hub:...)")
    p.add_argument(
        "-n", "--num-samples", type=positive_int, default=None, help="Monte-Carlo samples (default: the model's)"
    )
    p.add_argument("--top-k", type=positive_int, default=5, help="labels shown per file (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("evaluate", help="metrics, calibration and retention curves of a model on a dataset")
    p.add_argument("-m", "--model", required=True)
    p.add_argument("--dataset", required=True, help="esc50, urbansound8k, dcase2013, folder")
    p.add_argument("--data-root", required=True)
    p.add_argument("--folds", default="", help="e.g. 1,2 (default: all clips)")
    p.add_argument("--clip-seconds", type=float, default=0.0)
    p.add_argument("-n", "--num-samples", type=positive_int, default=None)
    p.add_argument("--replications", type=positive_int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--out", required=True)
    _band_options(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("retention", help="retention curves and figures from a saved predictions.safetensors")
    p.add_argument("predictions")
    p.add_argument("--out", required=True)
    _band_options(p)
    p.set_defaults(func=_cmd_retention)


def _band_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--interval",
        choices=["percentile", "basic", "bca"],
        default="percentile",
        help="bootstrap band of the retention curves of a single run (several runs give a Student-t band)",
    )
    p.add_argument(
        "--classes",
        choices=["fixed", "kept"],
        default="fixed",
        help="mAP retention curves: average the classes with a positive among all clips (fixed, a class without "
        "a kept positive counts 0) or only the classes with a kept positive (kept)",
    )
