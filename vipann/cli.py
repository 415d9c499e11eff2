"""The ``vipann`` command line (argparse subcommands).

Each subcommand lives in a small ``_cmd_*`` function on top of the public API, so everything the
CLI does can also be done from Python.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def _cmd_list(args: argparse.Namespace) -> int:
    from vipann._registry import get_pretrained_cfg, list_models

    names = list_models(args.pattern, weights=args.weights)
    if args.json:
        print(json.dumps([get_pretrained_cfg(n).to_dict() for n in names], indent=2))
        return 0
    rows = [("name", "classes", "rate", "samples", "weights", "description")]
    for name in names:
        cfg = get_pretrained_cfg(name)
        rows.append(
            (
                name,
                str(cfg.num_classes),
                f"{cfg.sample_rate // 1000}k",
                str(cfg.default_num_samples),
                cfg.weights,
                cfg.description,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from vipann.factory import create_model
    from vipann.layers import flipout_layers
    from vipann.profile import count_macs, count_parameters

    model = create_model(args.name, num_classes=args.num_classes, device="meta")
    cfg = model.pretrained_cfg
    seconds = args.seconds if args.seconds is not None else cfg.clip_seconds
    report = count_macs(model, seconds, convention=args.convention)
    info = {
        "name": cfg.name,
        "arch": cfg.arch,
        "method": cfg.method,
        "num_classes": model.num_classes,
        "sample_rate": cfg.sample_rate,
        "trainable_parameters": count_parameters(model),
        "stochastic_weights": sum(
            layer.mu_w.numel() + (0 if layer.mu_bias is None else layer.mu_bias.numel())
            for _, layer in flipout_layers(model)
        ),
        "seconds": seconds,
        "macs": report.total,
        "mac_convention": args.convention,
        "default_num_samples": cfg.default_num_samples,
        "weights": cfg.weights,
        "hf_hub_id": cfg.hf_hub_id,
        "provenance": cfg.provenance,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if key in ("trainable_parameters", "stochastic_weights", "macs"):
            value = f"{value:,}"
        print(f"{key:>22}: {value}")
    if args.stages:
        print()
        print(report)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from vipann.demo import run_demo

    return run_demo(out=args.out, quick=args.quick)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``vipann`` command.

    Returns:
        The parser with one subcommand per task.
    """
    parser = argparse.ArgumentParser(
        prog="vipann", description="Uncertainty-aware audio classification with PANNs (det, drop, flip, detflip)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'flip-*'")
    p.add_argument("--weights", choices=("hub", "convert", "none"), help="only entries with these weights")
    p.add_argument("--json", action="store_true", help="print the full metadata as JSON")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="parameters, MACs and metadata of a model")
    p.add_argument("name", help="registry name, e.g. flip-resnet54")
    p.add_argument("--num-classes", type=int, default=None, help="size of the classifier (default: the entry's)")
    p.add_argument("--seconds", type=float, default=None, help="clip length for the MAC count (default: the entry's)")
    p.add_argument(
        "--convention",
        choices=("vipann", "paper"),
        default="vipann",
        help="'vipann': what vipann executes; 'paper': the VI-PANN Table 1 counting (torchprofile on VI-PANN code)",
    )
    p.add_argument("--stages", action="store_true", help="also print MACs per stage")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("demo", help="run the embedded end-to-end demo")
    p.add_argument("--out", default="vipann-demo", help="output directory")
    p.add_argument("--quick", action="store_true", help="smaller run (for tests)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vipann`` command.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit code.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"vipann {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
