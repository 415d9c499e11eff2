"""The settings of the transfer-learning recipe (:class:`TransferConfig`), checked when built."""

from __future__ import annotations

from dataclasses import dataclass, field

from vipann.recipes._outputs import STAGES
from vipann.recipes._semi import ALIASES, VARIANTS
from vipann.recipes._temperature import check_val_fraction
from vipann.train.transfer import HEADS, STRATEGIES

__all__ = ["LAPLACE_VARIANTS", "OPTIMIZERS", "TransferConfig"]

OPTIMIZERS = ("adam", "ivon")
#: Post-hoc Laplace posteriors a transfer run can evaluate: ``<subset>-<hessian>``.
LAPLACE_VARIANTS = ("last_layer-kron", "last_layer-diag", "head-kron", "head-diag")


@dataclass
class TransferConfig:
    """Settings of a transfer-learning run; the defaults reproduce the paper.

    Attributes:
        dataset: ``esc50``, ``urbansound8k``, ``dcase2013`` or ``folder``.
        data_root: The dataset folder as distributed.
        out: Output directory.
        model: Backbone: a registry name or source (``local-dir:...``, ``hf-hub:...``). A registry
            architecture without weights (e.g. ``flip-tiny``) starts from random weights (logged).
        strategies: Strategies to run (``flip``, ``detflip``, ``drop``, ``det``).
        from_scratch: Train the same networks from random weights (paper Table 5).
        stages: Stages to run, in order: ``fixed`` (head on cached features) and/or ``finetuned``
            (everything; after ``fixed`` it starts from the fixed-feature weights).
        folds: Test folds (default: every fold of the dataset).
        clip_seconds: Clip length (default: the dataset's: ESC-50 5, UrbanSound8K 4, DCASE2013 30).
        fixed_epochs: Epochs of the fixed-feature stage.
        finetune_epochs: Epochs of the fine-tuned stage.
        lr: Learning rate of the fixed-feature stage (the fine-tuned stage uses lr / 10).
        finetune_lr_factor: Divisor of the fine-tuned learning rate.
        batch_size: Batch size (per process).
        feature_draws: Cached Monte-Carlo feature draws per clip for a stochastic frozen backbone.
        moped_delta: MOPED delta (Det-Flip head, deterministic trunk into a Flipout strategy).
        head_dropout: MC-dropout rate of the Drop head.
        kl_reduction: ``mean`` (bayesian-torch / VI-PANN) or ``sum`` (full-sum ELBO).
        loss: ``ce`` or ``focal``.
        label_smoothing: Label smoothing of the data term.
        focal_alpha: Focal-loss class balance (paper 000: 0.25; None: none).
        focal_gamma: Focal-loss focusing parameter (paper 000: 2).
        head: ``mlp`` (the strategy's PANN head) or ``sngp`` (spectral-normalised GP head; not with
            ``detflip``).
        optimizer: ``adam`` or ``ivon`` (IVON, Shen et al. 2024: a variational posterior over the
            trained weights, sampled at prediction; ``det`` and ``drop`` strategies with the MLP head).
        ivon_lr: IVON's learning rate in the fixed-feature stage (the fine-tuned stage divides it by
            ``finetune_lr_factor``).
        ivon_ess: IVON's effective sample size (0: the number of training clips).
        ivon_hess_init: IVON's initial Hessian estimate.
        ivon_weight_decay: IVON's weight decay (its prior precision per example).
        ivon_train_samples: Weight samples per IVON step.
        laplace: Post-hoc Laplace posteriors to evaluate after every stage of a single (non-ensemble)
            deterministic-head model, each fitted on the training clips and evaluated in
            ``<stage>/laplace-<subset>-<hessian>/``: any of ``last_layer-kron``, ``last_layer-diag``,
            ``head-kron``, ``head-diag``.
        sngp_features: Random Fourier features of the SNGP output layer.
        sngp_lengthscale: RBF length scale of the SNGP layer (0: the layer's default, the square
            root of its input width).
        mixup_alpha: Mixup Beta parameter for the training batches of both stages (0: no mixup).
        ensemble_members: Members of a deep ensemble per strategy and fold (1: a single model).
        val_fraction: Fraction of every class's training clips held out (stratified, seeded) to fit
            a temperature after each stage (0: no validation split and no temperature scaling).
        calibrated: Store the fitted temperature in exported models (``vipann.predict`` then applies
            it); needs ``val_fraction > 0``.
        pseudo_label_root: Folder of unlabelled audio for round-based self-training (pseudo-label
            rounds after each stage; FMUC itself is the FixMatch recipe, ``vipann.recipes.fixmatch``).
        pseudo_label_folds: Training folds whose labels are hidden and used as unlabelled pool
            (the accuracy of their pseudo-labels is recorded).
        pseudo_label_variant: Selection rule: ``mc-mean-std`` (FMUC's rule), ``mc-two-thresholds``,
            ``mc-no-temperature``, ``single-pass`` or ``confidence`` (FixMatch's rule); the earlier
            names ``fmuc``, ``fmuc-two-thresholds``, ``fmuc-no-temperature``, ``fmuc-no-mc`` and
            ``fixmatch`` are accepted and stored under the new names (see ``vipann.recipes._semi``).
        pseudo_label_temperature: Temperature of the selection softmax (paper 004: 2).
        pseudo_label_threshold: Threshold on ``mean - std`` of the top class (paper 004: 0.9).
        pseudo_label_std_threshold: Upper bound on the std for ``mc-two-thresholds``.
        pseudo_label_rounds: Select-and-retrain rounds per stage.
        num_samples: Monte-Carlo samples per prediction (1 for Det).
        replications: Independent prediction runs for the retention-curve confidence intervals.
        eval_batch_size: Clips per prediction batch.
        ood_root: Optional folder of out-of-distribution audio (e.g. ShipsEar).
        on_error: ``raise`` or ``skip`` clips that are missing or unreadable.
        device: ``cpu``, ``cuda`` or empty for automatic.
        amp: Mixed precision on CUDA.
        seed: Seed of everything random.
        resume: Continue a killed or finished run in ``out`` (refused when a setting that affects the
            results differs from the run's).
        overwrite: Delete a previous run in ``out`` and start over (``out`` must hold a run of this
            recipe, or nothing).
        export: Save every trained model in the zoo layout (``save_pretrained``).
        cache_dir: Where decoded audio is cached (default: vipann's cache folder).
        progress: Progress bars.
        plots: Render the PNG figures of every stage (the numbers are written either way).
    """

    dataset: str = "esc50"
    data_root: str = ""
    out: str = "runs/transfer"
    model: str = ""
    strategies: list[str] = field(default_factory=lambda: ["flip"])
    from_scratch: bool = False
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    folds: list[int] = field(default_factory=list)
    clip_seconds: float = 0.0
    fixed_epochs: int = 200
    finetune_epochs: int = 200
    lr: float = 1e-3
    finetune_lr_factor: float = 10.0
    batch_size: int = 32
    feature_draws: int = 8
    moped_delta: float = 0.5
    head_dropout: float = 0.5
    kl_reduction: str = "mean"
    loss: str = "ce"
    label_smoothing: float = 0.0
    focal_alpha: float | None = 0.25
    focal_gamma: float = 2.0
    head: str = "mlp"
    optimizer: str = "adam"
    ivon_lr: float = 0.1
    ivon_ess: float = 0.0
    ivon_hess_init: float = 1.0
    ivon_weight_decay: float = 1e-4
    ivon_train_samples: int = 1
    laplace: list[str] = field(default_factory=list)
    sngp_features: int = 1024
    sngp_lengthscale: float = 0.0
    mixup_alpha: float = 0.0
    ensemble_members: int = 1
    val_fraction: float = 0.0
    calibrated: bool = False
    pseudo_label_root: str = ""
    pseudo_label_folds: list[int] = field(default_factory=list)
    pseudo_label_variant: str = "mc-mean-std"
    pseudo_label_temperature: float = 2.0
    pseudo_label_threshold: float = 0.9
    pseudo_label_std_threshold: float = 0.05
    pseudo_label_rounds: int = 1
    num_samples: int = 30
    replications: int = 20
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

    def __post_init__(self) -> None:
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown:
            raise ValueError(f"unknown strategies {unknown}; choose from {list(STRATEGIES)}")
        if self.resume and self.overwrite:
            raise ValueError(
                "resume and overwrite exclude each other: --resume continues a run, --overwrite restarts it"
            )
        if not self.data_root:
            raise ValueError("data_root is required: the dataset folder as distributed (--data-root DIR)")
        if not self.stages or [s for s in STAGES if s in self.stages] != list(self.stages):
            raise ValueError(f"stages must be a non-empty, ordered subset of {list(STAGES)}, got {self.stages}")
        for name in ("fixed_epochs", "finetune_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in (
            "batch_size",
            "num_samples",
            "replications",
            "feature_draws",
            "eval_batch_size",
            "ensemble_members",
            "sngp_features",
            "pseudo_label_rounds",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {list(HEADS)}, got {self.head!r}")
        if not self.sngp_lengthscale >= 0:
            raise ValueError(f"sngp_lengthscale must be >= 0 (0: the default), got {self.sngp_lengthscale}")
        if self.head == "sngp" and "detflip" in self.strategies:
            raise ValueError("head='sngp' replaces the Flipout head of detflip; drop detflip or use head='mlp'")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.optimizer == "ivon":
            bayesian = [s for s in self.strategies if s in ("flip", "detflip")]
            if bayesian or self.head != "mlp":
                raise ValueError(
                    f"optimizer='ivon' learns its own posterior over a deterministic head; it does not combine with "
                    f"{bayesian or 'head=' + self.head!r} (use the det or drop strategy with head='mlp')"
                )
            if not (
                self.ivon_lr > 0 and self.ivon_ess >= 0 and self.ivon_hess_init > 0 and self.ivon_weight_decay >= 0
            ):
                raise ValueError("ivon_lr and ivon_hess_init must be > 0, ivon_ess and ivon_weight_decay >= 0")
            if self.ivon_train_samples < 1:
                raise ValueError(f"ivon_train_samples must be >= 1, got {self.ivon_train_samples}")
        unknown_laplace = [v for v in self.laplace if v not in LAPLACE_VARIANTS]
        if unknown_laplace:
            raise ValueError(f"unknown laplace variants {unknown_laplace}; choose from {list(LAPLACE_VARIANTS)}")
        if self.laplace and (self.optimizer != "adam" or self.head != "mlp"):
            raise ValueError("laplace needs a deterministic MLP head trained with adam (head='mlp', optimizer='adam')")
        if not self.mixup_alpha >= 0:
            raise ValueError(f"mixup_alpha must be >= 0 (0: no mixup), got {self.mixup_alpha}")
        check_val_fraction(self.val_fraction)
        if self.calibrated and self.val_fraction == 0:
            raise ValueError("calibrated=True needs a validation split to fit the temperature: set val_fraction > 0")
        self.pseudo_label_variant = ALIASES.get(self.pseudo_label_variant, self.pseudo_label_variant)
        if self.pseudo_label_variant not in VARIANTS:
            raise ValueError(
                f"unknown pseudo_label_variant {self.pseudo_label_variant!r}; choose one of {list(VARIANTS)} "
                f"(earlier names {list(ALIASES)} are accepted too)"
            )
        for name in ("pseudo_label_threshold", "pseudo_label_std_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.pseudo_label_temperature > 0:
            raise ValueError(f"pseudo_label_temperature must be > 0, got {self.pseudo_label_temperature}")
