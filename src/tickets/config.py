"""The config dataclasses: every option of every command, its help, its constraints, its YAML key and its place in
the run hash (see ``tickets.hparams`` for the machinery and the hash-stability rule).

A config is *resolved* before it is hashed (model-family training defaults filled in, schedule levels listed), so
a run directory's name says exactly what ran. Unknown keys and out-of-range values are errors, reported with the
key (and, in files, the line) before anything runs.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

from tickets.errors import TicketsError
from tickets.hparams import ConfigError, from_dict, hash_view, merge, option, to_dict, unknown_key_message, validate
from tickets.yamlio import YamlDocument, read_yaml

__all__ = [
    "AdversarialConfig", "RobustEvalConfig", "TrainConfig", "ScheduleConfig", "DataConfig", "FindConfig",
    "TransferConfig", "EvalConfig", "PretrainConfig", "SSLConfig", "RunOptions", "RewindPoint", "resolve_train", "resolve_attack",
    "resolve_schedule", "training_defaults", "default_alpha", "from_dict", "to_dict", "hash_view", "merge",
    "load_yaml", "load_yaml_document", "load_config", "locate", "validate", "validate_find", "validate_transfer",
    "validate_eval", "FAMILY_DEFAULTS",
]

OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("constant", "step", "cosine", "linear")
SCOPES = ("global", "layerwise")
HEAD_POLICIES = ("fresh", "pretrained")
ATTACKS = ("pgd", "fgsm")
SCHEDULE_KINDS = ("geometric", "linear", "explicit")
INITS = ("ticket", "theta0", "reinit")
SPLITS = ("train", "val", "test")
SEED_MAX = 2**31 - 1
PROBES = ("knn", "linear")
PRETRAIN_INITS = ("random", "pretrained")


def _methods() -> list[str]:
    from tickets.methods import METHODS

    return METHODS.names()


def _patterns() -> list[str]:
    from tickets.patterns import PATTERNS

    return PATTERNS.names()


def _pattern_help() -> str:
    """``--pattern``'s help, listing the registered patterns (plugins' included)."""
    from tickets.patterns import DEFAULT_PATTERN, PATTERNS

    names = [f"{n} (default)" if n == DEFAULT_PATTERN else "nm:N:M" if n == "nm" else n for n in PATTERNS.names()]
    return f"sparsity pattern (see `tickets patterns`): {', '.join(names)}; options follow a colon (channel:l2)"


def _floats(text: str) -> list[float]:
    """CLI text ``0.2,0.5`` → [0.2, 0.5]; TicketsError for text that lists no number (``""``, ``,``): given
    explicitly, an empty list would otherwise fall back to the default unseen."""
    try:
        out = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise TicketsError(f"expected comma-separated numbers like 0.2,0.5, got {text!r}") from None
    if not out:
        raise TicketsError(f"expected comma-separated numbers like 0.2,0.5, got {text!r} (no number): give at least "
                           "one, or leave the option out for the default")
    return out


# ----------------------------------------------------------------------------------------------------------------
# attacks
# ----------------------------------------------------------------------------------------------------------------
def default_alpha(attack: str, eps: float) -> float:
    """The step size used when none is given: ε/4 for PGD (2/255 at ε = 8/255), 1.25·ε for FGSM-RS (Wong et al.)."""
    return 1.25 * eps if attack == "fgsm" else eps / 4


@dataclass
class AdversarialConfig:
    """Adversarial training: PGD-k (Madry et al. 2018) or FGSM with random start (Wong et al. 2020)."""

    DEFAULT_STEPS: ClassVar[int] = 10

    attack: str = option("pgd", choices=ATTACKS, flag="--adv",
                         help="train on adversarial examples: pgd (PGD-k, random start) or fgsm (FGSM with random "
                              "start, 'fast adversarial training'); default: standard training")
    eps: float = option(8.0, ge=0, metavar="E",
                        help="training budget: L-inf radius in /255 pixel units for images (8 = 8/255); per-token L2 "
                             "radius of the input embeddings for text (default 8)")
    alpha: float | None = option(None, ge=0, metavar="A",
                                 help="training step size, same units (default eps/4 for PGD, 1.25*eps for FGSM)")
    steps: int | None = option(None, ge=1, metavar="K", help="PGD steps when training (default 10; FGSM takes one)")
    clean_fraction: float = option(0.0, ge=0, lt=1, metavar="F",
                                   help="fraction of each batch kept clean (default 0: all adversarial)")


@dataclass
class RobustEvalConfig:
    """Robust accuracy (RA) next to clean accuracy (SA): PGD-20 at 8/255 by default."""

    DEFAULT_STEPS: ClassVar[int] = 20

    attack: str = option("pgd", choices=ATTACKS,
                         help="attack for robust accuracy: pgd (L-inf PGD, random start) or fgsm (FGSM with random "
                              "start); default pgd")
    eps: float = option(8.0, ge=0, metavar="E",
                        help="attack budget: L-inf radius in /255 pixel units for images (8 = 8/255), per-token L2 "
                             "radius of the input embeddings for text; default 8; 0 gives exactly the clean figure")
    alpha: float | None = option(None, ge=0, metavar="A",
                                 help="attack step size, same units as --eps; default eps/4 for PGD, 1.25*eps for FGSM")
    steps: int | None = option(None, ge=1, metavar="K", help="PGD steps (default 20; FGSM takes one step)")
    limit: int | None = option(None, ge=1, metavar="N", flag="--robust-limit",
                               help="attack only the first N test examples (default: as many as the clean test)")


def resolve_attack(cfg: AdversarialConfig | RobustEvalConfig, where: str):
    """A copy with the step size and steps filled in (FGSM: one step), validated: what runs is what the config
    says. TicketsError for a bad value or steps given for FGSM."""
    validate(cfg, where)
    if cfg.attack == "fgsm" and cfg.steps not in (None, 1):
        flag = "--adv-steps" if isinstance(cfg, AdversarialConfig) else "--steps"
        raise TicketsError(f"{where}.steps is {cfg.steps} but FGSM takes one step: drop {flag} (or use pgd)")
    alpha = default_alpha(cfg.attack, cfg.eps) if cfg.alpha is None else cfg.alpha
    steps = 1 if cfg.attack == "fgsm" else (cfg.steps or cfg.DEFAULT_STEPS)
    return dataclasses.replace(cfg, alpha=float(alpha), steps=steps)


# ----------------------------------------------------------------------------------------------------------------
# data and training
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    """How much of a task's data to use and how to feed it."""

    train_size: int | None = option(None, ge=1, metavar="N",
                                    help="seeded subset of N training examples, before carving validation (default: "
                                         "all)")
    val_fraction: float = option(0.1, gt=0, lt=1,
                                 help="fraction of the (subset) training split carved off for model selection "
                                      "(default 0.1; stratified by class for classification)")
    val_size: int | None = option(None, ge=0, metavar="N",
                                  help="exact validation size; overrides --val-fraction (0: no validation split, "
                                       "for evaluation only — fine-tuning needs one)")
    limit: int | None = option(None, ge=1, metavar="N",
                               help="evaluate on the first N validation/test examples only")
    augment: bool = option(True, help="random crop + flip (images, where the task allows flips)")
    max_length: int | None = option(None, ge=2, metavar="N", help="text: max tokens per example (default: per task)")


@dataclass
class TrainConfig:
    """The masked fine-tuning loop's hyperparameters. ``None`` means "the model family's default"."""

    epochs: int = option(3, ge=1, help="epochs per fine-tune (find: per level; default 3)")
    batch_size: int | None = option(None, ge=1, help="default 64 (CNN) / 32 (transformer)")
    optimizer: str | None = option(None, choices=OPTIMIZERS, help="default sgd (CNN) / adamw (transformer)")
    lr: float | None = option(None, gt=0, help="peak learning rate; default 0.05 (CNN) / 2e-5 (transformer)")
    momentum: float = option(0.9, ge=0, lt=1, help="SGD momentum (default 0.9)")
    weight_decay: float | None = option(None, ge=0, help="default 5e-4 (CNN) / 0 (transformer)")
    lr_schedule: str | None = option(None, choices=LR_SCHEDULES, help="default cosine (CNN) / linear (transformer)")
    warmup: float | None = option(None, ge=0, lt=1,
                                  help="fraction of steps with linear learning-rate warm-up (default 0; a model's "
                                       "recipe may set it: minilm-l6 0.1)")
    step_milestones: list[float] = option(factory=lambda: [0.5, 0.75], gt=0, lt=1, parse=_floats, cli=False,
                                          help="step schedule: fractions of all steps where the lr drops")
    step_gamma: float = option(0.1, gt=0, cli=False, help="step schedule: lr factor at each milestone")
    grad_clip: float | None = option(None, gt=0, help="clip the gradient norm to this value (default: no clipping)")
    max_steps: int | None = option(None, ge=1, help="stop each fine-tune after this many optimizer steps")
    select_best: bool = option(True, cli=False, help="keep the epoch with the best validation score")
    eval_batch_size: int = option(256, ge=1, cli=False, help="batch size for evaluation")
    channels_last: bool = option(False, since=2,
                                 help="train convolutional models in channels-last (NHWC) memory layout: faster "
                                      "convolutions on CPUs; results differ in the last bits, so the run hash "
                                      "records it (default off)")
    compile: bool = option(False, since=2,
                           help="torch.compile the training forward (CNNs; needs a C++ compiler on a CPU): faster "
                                "steps after a one-off compile per fine-tune (15-35 s of CPU for ResNet-20/56); "
                                "results differ in the last bits, so the run hash records it (default off)")
    precision: str = option("fp32", since=2, choices=("fp32", "bf16", "fp16"),
                            help="training arithmetic: fp32 (default), bf16 or fp16 autocast (fp16 with loss scaling); "
                                 "weights, masks and evaluation stay float32")
    adversarial: AdversarialConfig | None = option(None, prefix="adv-", enable="--adv", enable_field="attack",
                                                   help="adversarial training (every fine-tune of the run)")


# Defaults per model family: SGD as in the CV papers, AdamW as in the BERT papers. CNN: the CVPR'21 fine-tuning
# lr 0.1 at batch 128, linearly scaled to batch 64 (more steps on the small subsets CPUs afford). At lr 0.01 a
# 3-epoch fine-tune on 2,000 images left ResNet-20 → Fashion-MNIST at 47% test accuracy; at 0.05 / 64, 82%.
FAMILY_DEFAULTS = {
    "cnn": dict(batch_size=64, optimizer="sgd", lr=0.05, weight_decay=5e-4, lr_schedule="cosine", warmup=0.0),
    "transformer": dict(batch_size=32, optimizer="adamw", lr=2e-5, weight_decay=0.0, lr_schedule="linear",
                        warmup=0.0),
}
FAMILY_ALIASES = {"bert": "transformer"}


def training_defaults(family: str, recipe: dict | None = None) -> dict:
    """The TrainConfig values a model gets for fields left unset: its family's defaults (``cnn`` or
    ``transformer``), overridden by the recipe the model declares (``spec.info["recipe"]``), if any."""
    family = FAMILY_ALIASES.get(family, family)
    if family not in FAMILY_DEFAULTS:
        raise TicketsError(f"unknown model family {family!r}: a model declares one of {', '.join(FAMILY_DEFAULTS)}")
    return {**FAMILY_DEFAULTS[family], **(recipe or {})}


def resolve_train(cfg: TrainConfig, family: str, recipe: dict | None = None) -> TrainConfig:
    """``cfg`` with its unset (``None``) fields filled from ``training_defaults(family, recipe)``, validated.

    Only unset fields are filled: a value the user gave, even one equal to the family default (``--warmup 0`` on
    minilm-l6, whose recipe says 0.1), is kept. TicketsError names the first bad value."""
    defaults = training_defaults(family, recipe)
    filled = {f.name: defaults[f.name] for f in dataclasses.fields(TrainConfig)
              if f.name in defaults and getattr(cfg, f.name) is None}
    out = dataclasses.replace(cfg, **filled)
    validate(out, "train")
    if out.adversarial is not None:
        out = dataclasses.replace(out, adversarial=resolve_attack(out.adversarial, "train.adversarial"))
    return out


# ----------------------------------------------------------------------------------------------------------------
# schedules and rewinding
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class ScheduleConfig:
    """Sparsity levels: explicit ``sparsities``, or ``levels`` of a geometric / linear schedule at ``rate``."""

    kind: str = option("geometric", choices=SCHEDULE_KINDS, flag="--schedule",
                       help="geometric: prune --rate of the remaining weights per level (CV papers, default); linear: "
                            "--rate of the original per level (BERT paper); explicit: --sparsities")
    rate: float | None = option(None, gt=0, lt=1,
                                help="fraction pruned per level (default 0.2 geometric; 0.1 linear)")
    levels: int = option(6, ge=1, le=1000, help="number of levels of the schedule (default 6)")
    sparsities: list[float] | None = option(None, ge=0, lt=1, parse=_floats, metavar="S,S,...",
                                            help="explicit sparsity levels, e.g. 0.2,0.5,0.8 (the schedule becomes "
                                                 "explicit)")

    def sparsities_list(self) -> list[float]:
        """The sparsity of each level (after the dense level 0 of IMP), checked: TicketsError when a level is
        outside [0, 1) or the levels do not increase."""
        from tickets.pruning import Schedule

        kind = "explicit" if self.sparsities and self.kind == "geometric" else self.kind
        rate = self.rate if self.rate is not None else (0.1 if kind == "linear" else 0.2)
        return Schedule(kind=kind, rate=rate, levels=self.levels,
                        sparsities=tuple(self.sparsities or ())).sparsities_list()


def resolve_schedule(cfg: ScheduleConfig) -> ScheduleConfig:
    """Fill the rate (0.1 for linear, else 0.2) and make listed sparsities explicit; checks the levels."""
    kind = "explicit" if cfg.sparsities and cfg.kind == "geometric" else cfg.kind
    if cfg.sparsities and kind != "explicit":
        raise TicketsError(f"schedule has sparsities {cfg.sparsities} and kind {kind!r}: give either sparsities "
                           "(explicit levels) or a geometric / linear kind with rate and levels")
    rate = cfg.rate if cfg.rate is not None else (0.1 if kind == "linear" else 0.2)
    out = dataclasses.replace(cfg, kind=kind, rate=rate)
    out.sparsities_list()  # validates
    return out


@dataclass(frozen=True)
class RewindPoint:
    """Where IMP's survivors go back to after each pruning: θ0 (``theta0``), the weights after step K of the
    dense fine-tune (``step:K``, Frankle et al. 2020 / Renda et al. 2020), or a random re-initialisation
    (``reinit``, the random re-init baseline; the older spelling ``init`` is accepted)."""

    kind: str  # "theta0" | "step" | "reinit"
    step: int = 0

    @classmethod
    def parse(cls, text: str) -> "RewindPoint":
        """``theta0`` | ``step:K`` (K ≥ 0; ``step:0`` is θ0) | ``reinit`` (``init``); TicketsError otherwise."""
        text = str(text).strip()
        if text in ("theta0", "step:0"):
            return cls("theta0")
        if text in ("reinit", "init"):
            return cls("reinit")
        m = re.fullmatch(r"step:(\d+)", text)
        if m:
            return cls("step", int(m.group(1)))
        raise TicketsError(f"rewind must be theta0, step:K (K an integer step) or reinit, got {text!r}")

    def __str__(self) -> str:
        return f"step:{self.step}" if self.kind == "step" else self.kind


def _problem(check: Callable[[], Any]) -> str | None:
    """The TicketsError ``check()`` raises, as text (None when it passes): option ``check=`` hooks use it."""
    try:
        check()
    except TicketsError as exc:
        return str(exc)
    return None


def _check_rewind(value: str) -> str | None:
    return _problem(lambda: RewindPoint.parse(value))


def _check_prunable(value: str) -> str | None:
    from tickets.masks import PrunableSet

    return _problem(lambda: PrunableSet.parse(value))


def _check_sinks(value: str) -> str | None:
    from tickets.training import parse_sinks

    return _problem(lambda: parse_sinks(value))


def _check_pattern(value: str) -> str | None:
    from tickets.patterns import get_pattern

    return _problem(lambda: get_pattern(value))


# ----------------------------------------------------------------------------------------------------------------
# verbs
# ----------------------------------------------------------------------------------------------------------------
_SEED_HELP = "seed for data subsets, head init, data order, random masks (default 0)"


@dataclass
class SSLConfig:
    """Contrastive objectives (tasks ``simclr/<image set>``, ``moco/<image set>``); unset: the objective's default."""

    temperature: float | None = option(None, gt=0, metavar="T",
                                       help="NT-Xent / InfoNCE temperature (default 0.5 SimCLR, 0.2 MoCo v2)")
    proj_dim: int = option(128, ge=1, metavar="D", help="projection head output width (default 128)")
    proj_hidden: int | None = option(None, ge=1, metavar="D",
                                     help="projection head hidden width (default: the encoder's feature width)")
    queue: int | None = option(None, ge=1, metavar="K",
                               help="MoCo: negatives in the queue (default 4096, or the training-set size when "
                                    "smaller)")
    momentum: float = option(0.99, ge=0, lt=1, metavar="M", help="MoCo: key-encoder momentum (default 0.99)")
    knn_k: int = option(200, ge=0, metavar="K", help="kNN metric: neighbours (default 200; 0: no kNN metric)")
    knn_temperature: float = option(0.07, gt=0, metavar="T", help="kNN metric: vote temperature (default 0.07)")
    crop_scale: float = option(0.2, gt=0, le=1, metavar="S",
                               help="views: smallest random-resized-crop area fraction (default 0.2)")


def _weights_option():
    """The ``weights`` field find and transfer share (θ0 from a checkpoint; hashed by the file's sha256)."""
    return option(None, since=2, metavar="FILE",
                  help="start from this checkpoint (θ0) instead of the model's own weights: safetensors or a torch "
                       "state dict, wrapper prefixes resolved (module., MoCo encoder_q., Lightning model., "
                       "robustness-library module.model.); its sha256 is part of the run hash")


def _ssl_option():
    """The ``ssl`` field find and transfer share (options of the simclr/ and moco/ objectives)."""
    return option(factory=SSLConfig, since=2, prefix="ssl-",
                  help="self-supervised objectives (tasks simclr/<set>, moco/<set>)")


@dataclass
class FindConfig:
    """``tickets find``: draw tickets on a source task, level by level."""

    model: str = option("", help="model name (see `tickets models`), or hf:<id-or-path>")
    task: str = option("", help="task name (see `tickets tasks`), e.g. cifar10, digits-5-9, glue/sst2")
    method: str = option("imp", choices=_methods,
                         help="how each level's mask is drawn (see `tickets methods`; default imp)")
    prunable: str | None = option(None, check=_check_prunable,
                                  help="prunable set: preset cnn | cnn-all | all | bert, optionally with "
                                       "',include=REGEX' / ',exclude=REGEX' (default: the model's preset)")
    scope: str = option("global", choices=SCOPES,
                        help="rank weights globally (default) or per tensor (layerwise); structured patterns such as "
                             "channel usually want layerwise: one global ranking can strip a narrow layer to a "
                             "single channel")
    schedule: ScheduleConfig = option(factory=ScheduleConfig, help="the sparsity of each level")
    rewind: str = option("theta0", check=_check_rewind,
                         help="where IMP's survivors go back to: theta0 (default), step:K (the weights after step K "
                              "of the dense fine-tune; later levels train steps K..T of the same schedule and data "
                              "order, with a fresh optimizer state), reinit (random re-initialisation)")
    head: str = option("fresh", choices=HEAD_POLICIES,
                       help="task head: fresh (seeded new head, the same each level; default) or pretrained (keep "
                            "the shipped head; only on the model's own label space)")
    seed: int = option(0, ge=0, le=SEED_MAX, help=_SEED_HELP)
    train: TrainConfig = option(factory=TrainConfig, help="fine-tuning")
    data: DataConfig = option(factory=DataConfig, help="data")
    robust_eval: RobustEvalConfig | None = option(None, since=2, enable="--robust-eval",
                                                  help="also report robust accuracy after every level")
    weights: str | None = _weights_option()
    ssl: SSLConfig = _ssl_option()
    pattern: str = option("unstructured", since=2, check=_check_pattern, help=_pattern_help)


@dataclass
class TransferConfig:
    """``tickets transfer``: fine-tune θ0 under a ticket's mask (or dense) on a target task."""

    model: str = option("", help="model name (default: the one recorded in the ticket)")
    task: str = option("", help="target task")
    ticket: str | None = option(None, metavar="FILE",
                                help="ticket file (ours, PyTorch-prune state dict, open_lth mask.pth); none: the "
                                     "dense baseline")
    init: str = option("ticket", choices=INITS,
                       help="start weights: ticket (θ0 unless the ticket carries weights; default), theta0, reinit")
    reverse: bool = option(False, help="use the complement of the ticket's mask")
    head: str = option("fresh", choices=HEAD_POLICIES,
                       help="task head: fresh (seeded new head; default) or pretrained (keep the shipped head)")
    seed: int = option(0, ge=0, le=SEED_MAX, help=_SEED_HELP)
    save_weights: bool = option(False, help="also write the fine-tuned model.safetensors")
    train: TrainConfig = option(factory=TrainConfig, help="fine-tuning")
    data: DataConfig = option(factory=DataConfig, help="data")
    robust_eval: RobustEvalConfig | None = option(None, since=2, enable="--robust-eval",
                                                  help="also report robust accuracy")
    weights: str | None = _weights_option()
    ssl: SSLConfig = _ssl_option()
    force: bool = option(False, since=2, hashed=False,
                         help="use a ticket drawn for another model when its tensors fit (sparsity is then reported "
                              "over the tensors actually masked)")


@dataclass
class EvalConfig:
    """``tickets eval``: score a shipped or fine-tuned model, optionally under a ticket and an attack."""

    model: str = option("", help="model name")
    task: str = option("", help="task name")
    split: str = option("test", choices=SPLITS, help="split to score (default test)")
    ticket: str | None = option(None, metavar="FILE", help="apply this ticket's mask first")
    weights: str | None = option(None, metavar="FILE",
                                 help="score these weights: a fine-tuned model.safetensors (transfer --save-weights) "
                                      "or any checkpoint layout --weights of find reads (torch state dict, nested, "
                                      "wrapper prefixes resolved and named in the log); its head must fit the task")
    seed: int = option(0, ge=0, le=SEED_MAX, help="seed for attack random starts and data subsets (default 0)")
    batch_size: int = option(256, ge=1, help="evaluation batch size (default 256)")
    data: DataConfig = option(factory=lambda: DataConfig(augment=False), help="data")
    robust: RobustEvalConfig | None = option(None, enable="--attack", enable_field="attack",
                                             help="robust accuracy (with --attack: clean SA and robust RA on the same "
                                                  "examples, model in eval mode)")
    json: bool = option(False, hashed=False, help="print metrics as JSON")
    probe: str | None = option(None, since=2, choices=PROBES,
                               help="score the encoder's frozen features instead of its head: knn (weighted kNN, "
                                    "k 200, cosine, T 0.07, the training split as the bank) or linear (logistic "
                                    "regression fitted on the training split); the --weights head is then ignored")


@dataclass
class PretrainConfig:
    """``tickets pretrain``: dense training that produces θ0 (``<run>/model.safetensors``) on an upstream objective."""

    model: str = option("", help="model name (see `tickets models`)")
    task: str = option("", help="the objective: an image task for supervised pre-training (cifar10; with --adv pgd "
                                "or --adv fgsm adversarial: PGD or FGSM-RS 'fast'), simclr/<image set> or "
                                "moco/<image set> for self-supervised pre-training")
    init: str = option("random", choices=PRETRAIN_INITS,
                       help="start from the model's seeded random init (random, default) or its shipped weights "
                            "(pretrained)")
    weights: str | None = option(None, metavar="FILE",
                                 help="start from this checkpoint instead (any layout --weights reads); its sha256 "
                                      "is part of the run hash")
    head: str = option("fresh", choices=HEAD_POLICIES,
                       help="task head: fresh (seeded; default) or pretrained (keep the shipped classifier; on "
                            "simclr/moco: the projection head of the --weights file)")
    seed: int = option(0, ge=0, le=SEED_MAX, help="seed for data subsets, head init, data order and views (default 0)")
    train: TrainConfig = option(factory=TrainConfig, help="training")
    data: DataConfig = option(factory=DataConfig, help="data")
    ssl: SSLConfig = option(factory=SSLConfig, prefix="ssl-", help="self-supervised objectives (simclr/, moco/)")
    robust_eval: RobustEvalConfig | None = option(None, enable="--robust-eval",
                                                  help="also report robust accuracy of the pre-trained model")


@dataclass
class RunOptions:
    """Where and how a command runs; never part of a run's identity (not hashed)."""

    out: str | None = option(None, metavar="DIR", help="where run directories go (default: runs)")
    device: str = option("auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N")
    data_root: str | None = option(None, metavar="DIR", help="data root (default: $TICKETS_DATA)")
    model_root: str | None = option(None, metavar="DIR", help="pre-trained weights root (default: $TICKETS_MODELS)")
    threads: int | None = option(None, ge=1, le=4096, metavar="N",
                                 help="torch CPU threads (default: torch's choice; 1 is fastest for small models on a "
                                      "busy machine)")
    quiet: bool = option(False, help="no progress bars or progress lines (warnings and errors only)")
    log_to: str | None = option(None, metavar="SINK,...", check=_check_sinks,
                                help="also log every epoch to these sinks: tensorboard, mlflow (comma-separated)")


def _check_fine_tune_data(cfg: Any) -> None:
    if cfg.data.val_size == 0:
        raise TicketsError("data.val_size is 0 but fine-tuning selects its epoch on a validation split: give "
                           "--val-size N >= 1 or drop it (default: --val-fraction 0.1)")


def _check_attacks(cfg: Any) -> None:
    """Resolve every attack block once so their errors appear before anything is loaded."""
    train = getattr(cfg, "train", None)
    if train is not None and train.adversarial is not None:
        resolve_attack(train.adversarial, "train.adversarial")
    for key in ("robust_eval", "robust"):
        block = getattr(cfg, key, None)
        if block is not None:
            resolve_attack(block, key)


def _check_ssl(cfg: Any) -> None:
    if cfg.ssl != SSLConfig() and not cfg.task.startswith(("simclr/", "moco/")):
        raise TicketsError(f"--ssl-* options apply to simclr/<set> and moco/<set> tasks, not {cfg.task!r}: drop them")


def validate_find(cfg: FindConfig) -> None:
    """Everything about a find config that can be checked without loading anything; TicketsError otherwise."""
    if not cfg.model or not cfg.task:
        raise TicketsError("find needs a model and a task: pass --model M --task T (or set them in --config)")
    _check_ssl(cfg)
    validate(cfg, "")
    resolve_schedule(cfg.schedule)
    _check_attacks(cfg)
    _check_fine_tune_data(cfg)


def validate_transfer(cfg: TransferConfig) -> None:
    """The transfer counterpart of ``validate_find``."""
    if not cfg.task or not (cfg.model or cfg.ticket):
        raise TicketsError("transfer needs a task and a model (or a ticket that records one): pass --model M "
                           "--task T")
    _check_ssl(cfg)
    validate(cfg, "")
    _check_attacks(cfg)
    _check_fine_tune_data(cfg)


def validate_eval(cfg: EvalConfig) -> None:
    """The eval counterpart of ``validate_find``."""
    if not cfg.model or not cfg.task:
        raise TicketsError("eval needs a model and a task: pass --model M --task T (or set them in --config)")
    validate(cfg, "")
    _check_attacks(cfg)


# ----------------------------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------------------------
def load_yaml(path: str | Path) -> dict:
    """A ``--config`` file as a mapping (safe, bounded, duplicate keys refused; see ``tickets.yamlio``)."""
    return load_yaml_document(path).data


def load_yaml_document(path: str | Path) -> YamlDocument:
    """``load_yaml`` with the line of every key (``doc.line(("train", "epochs"))``), for errors that cite them."""
    doc = read_yaml(path)
    if not isinstance(doc.data, dict):
        raise TicketsError(f"config file {path} must be a mapping of option names to values, got "
                           f"{type(doc.data).__name__}: write `key: value` lines")
    return doc


def load_config(cls: type, data: dict, where: str, *, doc: YamlDocument | None = None,
                flags: dict | None = None) -> tuple[Any, RunOptions]:
    """Split a merged mapping (YAML + flags) into ``cls`` and the RunOptions, checking every key and value:
    TicketsError naming an unknown key (with the valid ones, and where it belongs: ``epochs`` → ``train.epochs``)
    or a bad value. ``doc``: the ``--config`` file ``data`` was read from, and ``flags`` the overrides merged into
    it: an error in a key the file set cites ``<file>:<line>:``."""
    run_keys = {f.name for f in dataclasses.fields(RunOptions)}
    cls_keys = {f.name for f in dataclasses.fields(cls)}
    try:
        for key in data:
            if key not in run_keys | cls_keys:
                raise ConfigError(unknown_key_message((cls, RunOptions), (key,), where), (key,), unknown=True)
        run = {k: v for k, v in data.items() if k in run_keys}
        rest = {k: v for k, v in data.items() if k not in run_keys}
        try:
            built = from_dict(cls, rest, where)
        except ConfigError as exc:
            if exc.unknown:  # an option of the run options (device, threads) misplaced in a block
                exc.args = (unknown_key_message((cls, RunOptions), exc.key, where),)
            raise
        return built, from_dict(RunOptions, run, where)
    except ConfigError as exc:
        raise locate(exc, doc, flags) from None


def locate(exc: ConfigError, doc: YamlDocument | None, flags: dict | None = None) -> TicketsError:
    """``exc`` as ``<file>:<line>: <message>`` when the key it is about was set by the YAML file ``doc`` (and not
    overridden by one of ``flags``); ``exc`` itself otherwise."""
    if doc is None or not isinstance(doc.data, dict):
        return exc
    node: Any = flags or {}
    for part in exc.key:  # a flag set this key (or the block holding it): the file is not to blame
        if not isinstance(node, dict) or part not in node:
            break
        node = node[part]
        if not isinstance(node, dict):
            return exc
    if not exc.key or exc.key[0] not in doc.data:
        return exc
    located = doc.error(exc.key, str(exc))
    located.key = exc.key  # type: ignore[attr-defined]
    return located
