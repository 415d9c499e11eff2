"""The settings of the FixMatch / FMUC recipe (:class:`FixMatchConfig`) and its methods (:data:`METHODS`).

A run trains every method of ``methods`` on the same splits: for every test fold and repetition the
training folds are split (stratified, seeded) into the labelled clips (``labelled_fraction`` of each
class, or ``labelled_per_class`` clips) and the unlabelled pool, whose labels are hidden from
training and used only to score the pseudo-labels and the accuracy on the left-out data.

=======================  ===================  ==============================================================
method                   paper 004 row        pseudo-label rule of the weakly augmented view
=======================  ===================  ==============================================================
``fm``                   FM                   one pass, ``softmax(z)``, top class ``>= fm_threshold`` (0.95)
``fm-threshold-0.99``    FM thresh. 0.99      as ``fm`` with threshold 0.99
``fmuc``                 FMUC                 ``mc_passes`` (5) MC-dropout passes, ``softmax(z / T)`` with
                                              ``T = temperature`` (2), ``mean - std >= fmuc_threshold`` (0.9)
``fmuc-threshold-0.95``  FMUC thresh. 0.95    as ``fmuc`` with threshold 0.95
``fmuc-two-thresholds``  FMUC two thresh.     as ``fmuc``, but ``mean >= ups_mean_threshold`` (0.7) and
                                              ``std <= ups_std_threshold`` (0.05), as UPS
``fmuc-no-temperature``  FMUC w/o temp.       as ``fmuc`` with ``T = 1``
``fmuc-temperature-4``   FMUC w. temp. 4      as ``fmuc`` with ``T = 4``
``fmuc-no-mc-dropout``   FMUC w/o MC-Dr.      as ``fmuc`` with one deterministic pass (no MC dropout)
``supervised``           Fully supervised     no pseudo-labels; every training clip keeps its label
``labelled-only``        (lower bound)        no pseudo-labels; only the labelled clips
=======================  ===================  ==============================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vipann.calibration.pseudo_labels import PseudoLabelRule
from vipann.models.views import FILLS, StrongAugment, WeakAugment
from vipann.train.transfer import STRATEGIES

__all__ = ["METHODS", "WEAK_PASSES", "FixMatchConfig", "Method"]

WEAK_PASSES = ("separate", "joint")


@dataclass(frozen=True)
class Method:
    """One trained configuration of a run.

    Attributes:
        name: Identifier (``methods`` entry, output folder).
        label: The row label of paper 004's tables.
        rule: Builds the pseudo-label rule from the run's settings; None for the supervised baselines.
        all_labels: Train on every training clip with its label (the fully supervised baseline).
    """

    name: str
    label: str
    rule: Callable[[FixMatchConfig], PseudoLabelRule] | None
    all_labels: bool = False

    @property
    def semi_supervised(self) -> bool:
        """True for the methods that pseudo-label the unlabelled clips."""
        return self.rule is not None


def _fm(threshold: float | None = None) -> Callable[[FixMatchConfig], PseudoLabelRule]:
    def rule(c: FixMatchConfig) -> PseudoLabelRule:
        return PseudoLabelRule(mc=False, temperature=None, threshold=c.fm_threshold if threshold is None else threshold)

    return rule


def _fmuc(**changes: object) -> Callable[[FixMatchConfig], PseudoLabelRule]:
    def rule(c: FixMatchConfig) -> PseudoLabelRule:
        settings: dict[str, object] = {
            "mc": True,
            "passes": c.mc_passes,
            "temperature": c.temperature,
            "threshold": c.fmuc_threshold,
            "std_threshold": None,
        }
        if changes.get("two_thresholds"):
            settings.update(threshold=c.ups_mean_threshold, std_threshold=c.ups_std_threshold)
        settings.update({k: v for k, v in changes.items() if k != "two_thresholds"})
        return PseudoLabelRule(**settings)  # type: ignore[arg-type]

    return rule


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("fm", "FM", _fm()),
        Method("fm-threshold-0.99", "FM thresh. 0.99", _fm(0.99)),
        Method("fmuc", "FMUC", _fmuc()),
        Method("fmuc-threshold-0.95", "FMUC thresh. 0.95", _fmuc(threshold=0.95)),
        Method("fmuc-two-thresholds", "FMUC two thresh.", _fmuc(two_thresholds=True)),
        Method("fmuc-no-temperature", "FMUC w/o temp.", _fmuc(temperature=None)),
        Method("fmuc-temperature-4", "FMUC w. temp. 4", _fmuc(temperature=4.0)),
        Method("fmuc-no-mc-dropout", "FMUC w/o MC-Dr.", _fmuc(mc=False)),
        Method("supervised", "Fully supervised", None, all_labels=True),
        Method("labelled-only", "Labelled only", None),
    )
}


@dataclass
class FixMatchConfig:
    """Settings of a FixMatch / FMUC run; the defaults are paper 004's (Section III, V-A, VI).

    Attributes:
        dataset: Any dataset the recipes read (``esc50``, ``urbansound8k``, ``dcase2013``, ``folder``,
            ``synthetic_downstream``); single-label only.
        data_root: The dataset folder as distributed.
        out: Output directory.
        model: Backbone: a registry name or source (``local-dir:...``, ``hf-hub:...``); empty: the
            strategy's AudioSet backbone (``drop-resnet54``). An architecture without weights starts
            from random weights (logged).
        strategy: Transfer strategy that builds the network (``drop``: MC-dropout backbone and head;
            ``det``, ``flip``, ``detflip`` work too, see ``weak_pass``).
        from_scratch: Train the same network from random weights.
        methods: Methods to train on the same splits (see :data:`METHODS`): Table II needs ``fmuc``,
            ``fm`` and ``supervised``; Table I every FM / FMUC variant.
        folds: Test folds (default: every fold of the dataset).
        repetitions: Repetitions per test fold, each with its own labelled subset and initialisation
            (paper: 3).
        clip_seconds: Clip length (default: the dataset's).
        labelled_fraction: Fraction of each class's training clips that keep their label (at least one
            per class).
        labelled_per_class: Labelled clips per class instead of a fraction (0: use the fraction).
        unlabelled_root: Optional folder of extra unlabelled audio added to the pool (no truth: it
            counts in the quantity, not in the quality).
        epochs: Training epochs (paper: 100 for TUT2017, 200 for NSynth; doubled for Table II).
        iterations_per_epoch: Optimiser steps per epoch (paper: 500).
        batch_size: Labelled clips per step and process ``B`` (paper: 32).
        mu: Unlabelled clips per labelled clip, ``mu * B`` per step (paper: 224 / 32 = 7).
        lr: Adam learning rate (paper: 1e-3).
        unlabelled_weight: Weight of the unlabelled loss (paper: 1, the unweighted sum).
        head_dropout: MC-dropout rate of the new ``drop`` head (before fc1 and the classifier).
        moped_delta: MOPED delta when a deterministic trunk goes into a Flipout strategy.
        kl_reduction: KL of Flipout layers (``mean`` or ``sum``); zero for ``drop`` / ``det``.
        fm_threshold: FixMatch's confidence threshold (0.95).
        fmuc_threshold: FMUC's threshold on ``mean - std`` (0.9).
        temperature: FMUC's temperature ``T`` (2, as UPS).
        mc_passes: FMUC's Monte-Carlo passes ``N`` per weakly augmented clip (5).
        ups_mean_threshold: Mean threshold of ``fmuc-two-thresholds`` (0.7).
        ups_std_threshold: Standard-deviation threshold of ``fmuc-two-thresholds`` (0.05).
        weak_pass: How the weak view is predicted. ``separate`` (default): without gradient, the
            network in evaluation mode (batch-norm running statistics) with its stochastic layers
            sampling for the ``mc_passes`` passes (``mc_sampling``), one pass at a time (memory of one
            training batch). ``joint``: as in FixMatch's and the paper's code, the weak view (repeated
            ``mc_passes`` times for FMUC) is part of the training forward pass (batch statistics,
            training-mode dropout, logits detached); the batch is then ``B + (N + 1) mu B`` clips;
            ``fmuc-no-mc-dropout`` needs ``separate``.
        time_shift: Largest random time shift of both views, fraction of the frames (FixMatch: 0.125).
        freq_shift: Largest random frequency shift, fraction of the mel bins (0.125).
        shift_fill: ``zero`` (cells shifted in are 0, the per-band mean) or ``wrap`` (circular shift).
        noise_std: Largest standard deviation of the strong view's Gaussian noise, drawn per clip from
            ``U(0, noise_std]``, in units of the normalised log-mel input (> 0).
        sharpen: Largest unsharp-masking amount of the strong view (per clip ``U(0, sharpen]``; 0: none).
        masking: Add SpecAugment stripes to the strong view.
        mask_time_width: Exclusive upper bound of a time stripe's width, frames.
        mask_time_stripes: Time stripes per clip.
        mask_freq_width: Exclusive upper bound of a frequency stripe's width, mel bins.
        mask_freq_stripes: Frequency stripes per clip.
        num_samples: Monte-Carlo samples per test prediction (1 for a ``det`` model).
        replications: Independent prediction runs for the retention-curve intervals (1: bootstrap).
        eval_batch_size: Clips per prediction batch.
        ood_root: Optional folder of out-of-distribution audio for the evaluation.
        on_error: ``raise`` or ``skip`` clips that are missing or unreadable.
        device: ``cpu``, ``cuda`` or empty for automatic.
        amp: Mixed precision on CUDA.
        seed: Seed of everything random.
        resume: Continue a killed run in ``out`` (finished runs are skipped, an unfinished one
            continues from its last epoch exactly); refused when a setting that affects results
            differs from the run's.
        overwrite: Delete a previous run in ``out`` and start over (``out`` must hold a run of this
            recipe; a folder of anything else is never touched).
        export: Save every trained model in the zoo layout.
        cache_dir: Where decoded audio is cached (default: vipann's cache folder).
        progress: Progress bars.
        plots: Render the PNG figures (the numbers are written either way).
    """

    dataset: str = "esc50"
    data_root: str = ""
    out: str = "runs/fixmatch"
    model: str = ""
    strategy: str = "drop"
    from_scratch: bool = False
    methods: list[str] = field(default_factory=lambda: ["fmuc", "fm", "supervised"])
    folds: list[int] = field(default_factory=list)
    repetitions: int = 3
    clip_seconds: float = 0.0
    labelled_fraction: float = 0.1
    labelled_per_class: int = 0
    unlabelled_root: str = ""
    epochs: int = 100
    iterations_per_epoch: int = 500
    batch_size: int = 32
    mu: int = 7
    lr: float = 1e-3
    unlabelled_weight: float = 1.0
    head_dropout: float = 0.5
    moped_delta: float = 0.5
    kl_reduction: str = "mean"
    fm_threshold: float = 0.95
    fmuc_threshold: float = 0.9
    temperature: float = 2.0
    mc_passes: int = 5
    ups_mean_threshold: float = 0.7
    ups_std_threshold: float = 0.05
    weak_pass: str = "separate"
    time_shift: float = 0.125
    freq_shift: float = 0.125
    shift_fill: str = "zero"
    noise_std: float = 0.2
    sharpen: float = 1.0
    masking: bool = False
    mask_time_width: int = 64
    mask_time_stripes: int = 2
    mask_freq_width: int = 8
    mask_freq_stripes: int = 2
    num_samples: int = 30
    replications: int = 1
    eval_batch_size: int = 16
    ood_root: str = ""
    on_error: str = "raise"
    device: str = ""
    amp: bool = False
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    export: bool = False
    cache_dir: str = ""
    progress: bool = True
    plots: bool = True

    @property
    def calibrated(self) -> bool:
        """No temperature is fitted on a validation split here (the FMUC temperature is part of the rule)."""
        return False

    def weak_augment(self) -> WeakAugment:
        """The weak view of these settings."""
        return WeakAugment(self.time_shift, self.freq_shift, self.shift_fill)

    def strong_augment(self) -> StrongAugment:
        """The strong view of these settings."""
        return StrongAugment(
            self.time_shift,
            self.freq_shift,
            self.shift_fill,
            self.noise_std,
            self.sharpen,
            self.masking,
            self.mask_time_width,
            self.mask_time_stripes,
            self.mask_freq_width,
            self.mask_freq_stripes,
        )

    def rule(self, method: str) -> PseudoLabelRule | None:
        """The pseudo-label rule of a method (None for the supervised baselines)."""
        spec = METHODS[method]
        return spec.rule(self) if spec.rule is not None else None

    def __post_init__(self) -> None:
        if not self.data_root:
            raise ValueError("data_root is required: the dataset folder as distributed (--data-root DIR)")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {list(STRATEGIES)}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown or no methods {unknown}; choose from {list(METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods lists a method twice: {self.methods}")
        for name in (
            "repetitions",
            "epochs",
            "iterations_per_epoch",
            "batch_size",
            "mu",
            "mc_passes",
            "num_samples",
            "replications",
            "eval_batch_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.labelled_fraction <= 1.0:
            raise ValueError(f"labelled_fraction must be in (0, 1], got {self.labelled_fraction}")
        if self.labelled_per_class < 0:
            raise ValueError(
                f"labelled_per_class must be >= 0 (0: use labelled_fraction), got {self.labelled_per_class}"
            )
        for name in ("fm_threshold", "fmuc_threshold", "ups_mean_threshold", "ups_std_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not self.lr > 0 or not self.unlabelled_weight >= 0:
            raise ValueError(f"lr must be > 0 and unlabelled_weight >= 0, got {self.lr} and {self.unlabelled_weight}")
        if self.kl_reduction not in ("mean", "sum"):
            raise ValueError(f"kl_reduction must be 'mean' or 'sum', got {self.kl_reduction!r}")
        if self.shift_fill not in FILLS:
            raise ValueError(f"shift_fill must be one of {list(FILLS)}, got {self.shift_fill!r}")
        self.strong_augment()  # checks every augmentation setting with a message naming it
        if self.weak_pass not in WEAK_PASSES:
            raise ValueError(f"weak_pass must be one of {list(WEAK_PASSES)}, got {self.weak_pass!r}")
        for method in self.methods:
            rule = self.rule(method)
            if rule is None:
                continue
            if self.weak_pass == "joint" and not rule.mc and method.startswith("fmuc"):
                raise ValueError(
                    f"{method} predicts the weak view without dropout, which the training-mode forward pass "
                    "of weak_pass='joint' cannot do; use weak_pass='separate'"
                )
            if self.weak_pass == "separate" and rule.mc and self.strategy == "det":
                raise ValueError(
                    f"{method} samples the weak view with MC dropout, but a det network has no dropout that "
                    "samples outside training mode; use strategy 'drop' (MC dropout), 'flip' or 'detflip', "
                    "or weak_pass='joint' (training-mode dropout)"
                )
