"""``vipann example-data``: the demo's downstream task and a transferred model, written where you say.

The README's ``vipann evaluate`` and ``vipann retention`` examples need a labelled dataset and a
trained model with the same classes. The demo zoo is pre-trained on the 20-class mini-AudioSet, and
the demo's transfer task has 10 other classes, so :func:`write_example_data` writes both pieces of
the demo's transfer into one folder:

* ``DIR/downstream/``: the generated 10-class transfer task in the exact ESC-50 layout (5 folds,
  :func:`~vipann.datasets.synthetic.make_downstream`; read it as ``synthetic_downstream`` for the 10
  classes, or as ``esc50``);
* ``DIR/ood/``: the generated out-of-distribution clips (:func:`~vipann.datasets.synthetic.make_ood`);
* ``DIR/transfer/``: the transfer recipe's run (:func:`~vipann.recipes.transfer.run_transfer`, the
  demo's settings, one strategy, test fold 1): metrics, predictions, figures;
* ``DIR/<strategy>-demo-downstream/``: the fine-tuned model of that run as a model directory
  (``model.safetensors``, ``config.json``, ``README.md``; ``vipann.from_pretrained("local-dir:...")``).
  It was trained on folds 2-5, so evaluate it on fold 1.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ExampleData", "write_example_data"]

STRATEGIES = ("flip", "detflip", "drop", "det")


@dataclass(frozen=True)
class ExampleData:
    """What :func:`write_example_data` wrote.

    Attributes:
        root: The output folder.
        downstream: The transfer task (ESC-50 layout; dataset ``synthetic_downstream``).
        ood: The out-of-distribution clips (dataset ``unlabelled``).
        transfer: The transfer recipe's output folder.
        model: The transferred model's directory (load it as ``local-dir:`` + this path).
        test_fold: The fold the model was not trained on.
    """

    root: Path
    downstream: Path
    ood: Path
    transfer: Path
    model: Path
    test_fold: int

    def commands(self) -> list[str]:
        """The README's ``evaluate`` and ``retention`` commands for this folder.

        Returns:
            Shell command lines, with the output folders ``results/`` and ``figures/``.
        """
        return [
            f"vipann evaluate -m local-dir:{self.model} --dataset synthetic_downstream "
            f"--data-root {self.downstream} --folds {self.test_fold} --out results/",
            "vipann retention results/predictions.safetensors --out figures/",
        ]


def write_example_data(
    out: str | os.PathLike[str],
    *,
    strategy: str = "flip",
    quick: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> ExampleData:
    """Write the demo's transfer task and a model transferred to it (see the module docstring).

    The dataset folders are reused when they already hold the same generated set; the transfer run
    and the model directory are rewritten (the model directory is swapped in atomically).

    Args:
        out: The output folder (created).
        strategy: Transfer strategy: ``flip`` (from ``flip-demo``), ``detflip``, ``drop`` or ``det``
            (from ``det-demo`` / ``drop-demo``, as in the demo).
        quick: The demo's quick sizes (2 clips per class and fold, a few epochs; for tests).
        seed: Seed of the generated audio and of training.
        progress: Progress bars.

    Returns:
        The paths written.

    Raises:
        ValueError: For an unknown strategy.
        FileExistsError: If ``out/downstream`` or ``out/ood`` is a non-empty folder that
            :mod:`vipann.datasets.synthetic` did not write.
    """
    from vipann.datasets.synthetic import make_downstream, make_ood
    from vipann.demo.run import SIZES, transfer_settings
    from vipann.recipes.transfer import TransferConfig, run_transfer
    from vipann.zoo.factory import from_pretrained

    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    root = Path(out)
    size = SIZES["quick" if quick else "full"]
    downstream = make_downstream(root / "downstream", seed=seed, clips_per_class_per_fold=size["per_fold"])
    ood = make_ood(root / "ood", seed=seed, num_clips=size["ood_clips"])
    settings = transfer_settings(downstream, ood, size, seed, progress)
    transfer = root / "transfer"
    config = TransferConfig(out=str(transfer), strategies=[strategy], **settings)
    run_transfer(config)
    (test_fold,) = config.folds
    export = transfer / strategy / f"fold{test_fold}" / "finetuned" / "export"
    from_pretrained(f"local-dir:{export}")  # the recipe's export must load as it is
    target = root / f"{strategy}-demo-downstream"
    _copy_model_dir(export, target)
    return ExampleData(root, downstream, ood, transfer, target, test_fold)


def _copy_model_dir(source: Path, target: Path) -> None:
    """Copy a verified model directory, byte for byte, atomically; only a model directory is replaced."""
    from vipann.utils.dirswap import make_staging_dir, recover_dir, swap_into_place
    from vipann.utils.outdirs import check_replaceable
    from vipann.zoo.config import MODEL_FILES, is_model_dir

    target = target.absolute()
    recover_dir(target)
    check_replaceable(target, recognise=is_model_dir, own_names=MODEL_FILES, what="a vipann model directory")
    staging = make_staging_dir(target)
    try:
        for file in sorted(source.iterdir()):
            if file.is_file():
                shutil.copyfile(file, staging / file.name)
        swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
