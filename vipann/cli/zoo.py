"""The zoo subcommands of the ``vipann`` CLI: ``list``, ``info``, ``convert``, ``push``, ``card``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from torch import nn

from vipann.layers import flipout_layers
from vipann.models.profile import CONVENTIONS, count_macs, count_parameters
from vipann.zoo import convert
from vipann.zoo.cards import render_card, write_card
from vipann.zoo.checkpoint import read_torch_checkpoint
from vipann.zoo.config import read_config
from vipann.zoo.factory import create_model
from vipann.zoo.hub import push_to_hub
from vipann.zoo.identify import where_published
from vipann.zoo.registry import WEIGHTS, get_pretrained_cfg, list_models
from vipann.zoo.serialization import save_pretrained

__all__ = ["add_commands"]


def _cmd_list(args: argparse.Namespace) -> int:
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


def _cmd_convert(args: argparse.Namespace) -> int:
    if not Path(args.file).is_file():
        raise FileNotFoundError(
            f"checkpoint {args.file!r} does not exist; {where_published(args.file)}; download it and run "
            "this command on the downloaded file"
        )
    state = read_torch_checkpoint(args.file)
    kind = args.kind
    if kind == "auto" and convert.is_efficientat_state_dict(state):
        kind = "efficientat"
    if kind == "auto":
        flipout = any(k.endswith((".mu_kernel", ".mu_weight")) for k in state)
        kind = "bayesian-torch" if flipout else "panns"
    if kind == "efficientat":
        model = convert.from_efficientat_checkpoint(
            args.file, args.name, moped_delta=args.moped_delta, moped_prior=args.moped_prior
        )
        return _save_converted(args, model)
    # Cnn14 and Cnn14_DecisionLevelMax have the same tensors: the file name or --name tells them apart,
    # and a file name that contradicts the tensors or --name is refused.
    if args.name is None:
        name = convert.default_name(args.file, state, kind)
    else:
        convert.resolve_architecture(state, args.file, args.name)
        name = args.name
    print(convert.describe_conversion(args.file, name))
    if kind == "panns":
        model = convert.from_panns_checkpoint(state, name, moped_delta=args.moped_delta, moped_prior=args.moped_prior)
    elif kind == "vipann":
        model = convert.from_vipann_checkpoint(state, name, head_delta=args.head_delta, moped_delta=args.moped_delta)
    else:
        model = convert.from_bayesian_torch(state, name, head_delta=args.head_delta)
    return _save_converted(args, model)


def _save_converted(args: argparse.Namespace, model: nn.Module) -> int:
    out = save_pretrained(model, args.out or f"./{model.pretrained_cfg.name}", overwrite=args.overwrite)
    print(f"{args.file} -> {model.pretrained_cfg.name} ({model.method}, {model.num_classes} classes) in {out}")
    print(f"load it with vipann.from_pretrained('local-dir:{out}')")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    files = push_to_hub(args.dir, args.repo_id, revision=args.revision, private=args.private, dry_run=args.dry_run)
    where = f"{args.repo_id}@{args.revision or 'main'}"
    print(("would upload to " if args.dry_run else "uploaded to ") + where + ":")
    for name in files:
        print(f"  {name}")
    return 0


def _cmd_card(args: argparse.Namespace) -> int:
    if args.stdout:
        print(render_card(read_config(args.dir)))
    else:
        print(write_card(args.dir))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``list``, ``info``, ``convert``, ``push`` and ``card`` on the ``vipann`` parser.

    Args:
        sub: The subparsers object of the main parser.
    """
    p = sub.add_parser("list", help="list registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'flip-*'")
    p.add_argument("--weights", choices=tuple(WEIGHTS), help="only entries whose weights load this way")
    p.add_argument("--json", action="store_true", help="print the full metadata as JSON")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="parameters, MACs and metadata of a model")
    p.add_argument("name", help="registry name, e.g. flip-resnet54")
    p.add_argument("--num-classes", type=int, default=None, help="size of the classifier (default: the entry's)")
    p.add_argument("--seconds", type=float, default=None, help="clip length for the MAC count (default: the entry's)")
    p.add_argument(
        "--convention",
        choices=CONVENTIONS,
        default="vipann",
        help="'vipann': what vipann executes; 'paper': the VI-PANN Table 1 counting (torchprofile on VI-PANN code; "
        "PANN models); 'efficientat': the EfficientAT repository's counter (Conv2d and Linear modules only)",
    )
    p.add_argument("--stages", action="store_true", help="also print MACs per stage")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("convert", help="convert an original checkpoint into a vipann model directory")
    p.add_argument(
        "kind",
        choices=("auto", "panns", "vipann", "bayesian-torch", "efficientat"),
        help="checkpoint family: PANNs release .pth, VI-PANN deterministic/flipout.pth, bayesian-torch, "
        "EfficientAT release .pt (mn10_as_mAP_471.pt, dymn10_as.pt, ...); 'auto' tells them apart",
    )
    p.add_argument("file", help="the .pth / .pt file")
    p.add_argument("--name", help="vipann name of the result (default: from the file name / layout)")
    p.add_argument("--out", help="output directory (default: ./NAME)")
    p.add_argument("--moped-delta", type=float, default=0.5, help="MOPED delta for Flipout layers (0.5)")
    p.add_argument(
        "--moped-prior",
        choices=("zero", "weights"),
        default="zero",
        help="prior of MOPED layers: N(0,1) or centred on the weights (empirical Bayes)",
    )
    p.add_argument(
        "--head-delta",
        type=float,
        default=None,
        help="flipout.pth: MOPED delta for its deterministic head (default: keep it deterministic)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing vipann model directory (any other non-empty folder is refused)",
    )
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("push", help="upload a model directory to the Hugging Face Hub")
    p.add_argument("dir")
    p.add_argument("--repo-id", required=True, help="ORG/NAME")
    p.add_argument("--revision", help="branch to upload to (created if needed)")
    p.add_argument("--private", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print what would be uploaded")
    p.set_defaults(func=_cmd_push)

    p = sub.add_parser("card", help="render the model card (README.md) of a model directory")
    p.add_argument("dir")
    p.add_argument("--stdout", action="store_true", help="print instead of writing DIR/README.md")
    p.set_defaults(func=_cmd_card)
