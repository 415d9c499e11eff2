"""The ``vipann zoo`` subcommands: ``build``, ``publish`` and ``import`` (original files, the Hub, the cache)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator

from vipann.zoo.build import build_zoo, import_file, publish_zoo
from vipann.zoo.release import zoo_cache_dir

__all__ = ["add_commands"]


@contextlib.contextmanager
def _log_to_stderr() -> Iterator[None]:
    """Show the zoo's steps (download, checksum, conversion, sizes, paths) while a command runs."""
    logger = logging.getLogger("vipann.zoo")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _cmd_build(args: argparse.Namespace) -> int:
    with _log_to_stderr():
        results = build_zoo(args.from_dir, args.out, pattern=args.pattern, overwrite=args.overwrite)
    width = max((len(r.name) for r in results), default=0)
    for result in results:
        print(f"{result.name.ljust(width)}  {result.status:<10}  {result.detail}")
    built = [r for r in results if r.path is not None]
    failed = [r for r in results if r.status == "failed"]
    print(f"{len(built)} model directories in {args.out}; {len(failed)} failed")
    if built:
        print(f"publish them with: vipann zoo publish {args.out} --org ORG --dry-run")
    return 1 if failed or not built else 0


def _cmd_publish(args: argparse.Namespace) -> int:
    with _log_to_stderr():
        published = publish_zoo(
            args.zoo, args.org, dry_run=args.dry_run, private=args.private, revision=args.revision, token=args.token
        )
    verb = "would upload" if args.dry_run else "uploaded"
    for name, repo_id, files in published:
        print(f"{name}: {verb} {', '.join(files)} to {repo_id}@{args.revision or 'main'}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    with _log_to_stderr():
        result = import_file(args.file, names=args.name or (), cache_dir=args.cache_dir)
    print(f"{args.file} is {result.file}; cached in {result.stored}")
    print(f"these models now load from the cache, offline too: {', '.join(result.serves)}")
    if result.built:
        print(f"converted now: {', '.join(result.built)}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the ``zoo`` group (``build``, ``publish``, ``import``) on the ``vipann`` parser.

    Args:
        sub: The subparsers object of the main parser.
    """
    zoo = sub.add_parser("zoo", help="build the zoo from original checkpoints, publish it, import files")
    group = zoo.add_subparsers(dest="zoo_command", required=True, metavar="ZOO_COMMAND")

    p = group.add_parser(
        "build",
        help="build every entry whose original checkpoint is in a folder into Hub-ready directories",
        description="Check each original file (PANNs release files, VI-PANN's flipout.pth) against its published "
        "checksum, convert it with the registry's recipe and write OUT/<name> (weights, config, card with "
        "provenance, checksums and the release's metrics).",
    )
    p.add_argument("--from", dest="from_dir", required=True, help="folder of original checkpoints")
    p.add_argument("--out", required=True, help="folder for the model directories")
    p.add_argument("--pattern", default="*", help="only entries matching this shell pattern, e.g. 'det-*'")
    p.add_argument("--overwrite", action="store_true", help="replace directories built from another file")
    p.set_defaults(func=_cmd_build)

    p = group.add_parser("publish", help="push every model directory of a zoo folder to ORG/<name> on the Hub")
    p.add_argument("zoo", help="a folder written by `vipann zoo build`")
    p.add_argument("--org", required=True, help="Hub user or organisation")
    p.add_argument("--revision", help="branch to commit to (created if needed)")
    p.add_argument("--private", action="store_true", help="create the repositories as private")
    p.add_argument("--token", help="Hub token with write access (default: HF_TOKEN / the saved login)")
    p.add_argument("--dry-run", action="store_true", help="verify and list what would be uploaded; send nothing")
    p.set_defaults(func=_cmd_publish)

    p = group.add_parser(
        "import",
        help="put an original checkpoint fetched elsewhere into the cache (then from_pretrained works offline)",
    )
    p.add_argument("file", help="e.g. Cnn14_mAP=0.431.pth (checked against its published checksum) or flipout.pth")
    p.add_argument("--name", action="append", help="also convert this registry entry now (repeatable)")
    p.add_argument("--cache-dir", help=f"cache root (default: {zoo_cache_dir()})")
    p.set_defaults(func=_cmd_import)
