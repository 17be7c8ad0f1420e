"""A setting's meaning, declared beside its default: `setting(100, "neighbours kept per
item")` is a dataclass field whose metadata carries the help text that `directrec train
MODEL --help` and `directrec models MODEL` print. Kept in the field (not parsed from the
source's comments) so it survives packaging and is checked by a test for every model.

A subclass that only changes a default (`epochs: int = 60` over `TrainConfig`'s) keeps the
meaning its base class declared: `setting_help` looks the name up along the MRO.

Settings come in parts, each a small type of its own with one job: a network's shape
(`NetworkConfig`: what the network module is built from, and nothing else), training
(`LoopConfig`, `TrainConfig`), decoding, a model's own settings (`ModelConfig`) and how it
runs here (`RunSettings`, never saved). A model's `Config` combines its parts by
inheritance, so `--set` and a recipe name every setting by its plain name, and the recipe
file groups them by part (`setting_parts`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Self, TypeVar

from directrec.text.features import check as check_features

T = TypeVar("T")
Checks = dict[str, tuple[bool, str]]  # setting → (whether its value is valid, what it takes)
# The parts a model's settings fall into, in the order a recipe and `directrec models` list them
PARTS = ("network", "codes", "training", "decoding", "model", "run")


def setting(default: T, help: str, part: str | None = None) -> T:
    """A config field with default `default` and a one-line meaning `help`; `part` names
    its part where it is not its class's (see `setting_parts`)."""
    # typed as T so that `neighbours: int = setting(100, "...")` checks like a plain default
    meta = {"help": help} | ({"part": part} if part else {})
    field: Any = dataclasses.field(default=default, metadata=meta)
    return field


@dataclasses.dataclass
class Part:
    """A group of settings with one job. Each class checks the fields it declares in a
    `checks` method of its own; building any config runs every class's `checks` along its
    MRO, base classes first, so a bad value fails when the config is built, never at fit."""

    part: ClassVar[str] = "model"  # which part the fields this class declares belong to

    def __post_init__(self) -> None:
        for klass in reversed(type(self).__mro__):
            own = vars(klass).get("checks")
            if own is not None:
                check(own(self), self)

    @classmethod
    def of(cls, config: Any) -> Self:
        """This part's settings, taken from a config that combines it with others."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


@dataclasses.dataclass
class ModelConfig(Part):
    """What every model's config holds; each model's `Config` extends it with its own."""

    seed: int = setting(42, "random seed: initialisation, sampling and shuffling", part="training")


@dataclasses.dataclass
class NetworkConfig(Part):
    """Base of a network's own config: the settings that fix its shape (the weights depend
    on them), and that its module is built from alone."""

    part: ClassVar[str] = "network"


@dataclasses.dataclass
class DecodingConfig(Part):
    """Base of how a generator writes its lists (beams, sampling): changeable on a trained
    model without touching its weights."""

    part: ClassVar[str] = "decoding"


def setting_parts(config_class: type) -> dict[str, str]:
    """Every field of `config_class` → the part it belongs to: the field's own (`setting`'s
    `part`), else that of the most basic class along the MRO that declares it (so
    overriding a default keeps the part). A class says its fields' part with `part`; one
    that combines parts and declares fields of its own without saying so has them in
    "model"."""
    out: dict[str, str] = {}
    for klass in reversed(config_class.__mro__):
        if "__dataclass_fields__" not in vars(klass):
            continue
        part = vars(klass).get("part")
        if part is None:
            bases = {getattr(b, "part", None) for b in klass.__bases__} - {None}
            part = bases.pop() if len(bases) == 1 else "model"
        for name in vars(klass)["__dataclass_fields__"]:
            out.setdefault(name, part)
    fields = dataclasses.fields(config_class)
    return {f.name: _declared(config_class, f.name, "part") or out[f.name] for f in fields}


def _declared(cls: type, name: str, key: str) -> str:
    """Field `name`'s metadata `key` from its nearest declaration along `cls`'s MRO that
    has one ("" where none does): a subclass that only changes a default keeps it."""
    for klass in cls.__mro__:
        declared = vars(klass).get("__dataclass_fields__", {}).get(name)
        if declared is not None and declared.metadata.get(key):
            return declared.metadata[key]
    return ""


def setting_help(*config_classes: type) -> dict[str, str]:
    """Every field of the dataclasses `config_classes` → its meaning ("" where none is
    declared), the nearest declaration along each class's MRO winning."""
    out: dict[str, str] = {}
    for cls in config_classes:
        for f in dataclasses.fields(cls):
            out.setdefault(f.name, _declared(cls, f.name, "help"))
    return out


# ----------------------------------------------------------------------------- settings
@dataclasses.dataclass
class RunSettings:
    """How a model runs here, never what it is: none of these is saved in a model's config
    or compared when a checkpoint resumes, and a loaded model gets the defaults (the item
    features it was fit on are kept in its meta, as data facts are)."""

    part: ClassVar[str] = "run"

    device: str = setting("auto", "auto (CUDA when there is one) | cpu | cuda | cuda:N")
    threads: int = setting(0, "torch intra-op threads (0 = torch's default)")
    bf16: bool = setting(
        False, "bfloat16 autocast where the model supports it (training; CUDA scoring)"
    )
    progress: bool = setting(False, "an epoch bar on a terminal, else one stderr line per epoch")
    checkpoint_dir: str = setting(
        "", "where an epoch-trained model saves progress and resumes from"
    )
    # Chosen here, recorded in the fitted model's meta (`item_features`), so an update or
    # a list with MMR reads the same kind of vectors the model was fit on.
    item_features: str = setting(
        "text", "item vectors (content, semantic IDs, MMR, cold items): text | image | both"
    )

    def __post_init__(self) -> None:
        dev = self.device
        if not (dev in ("", "auto", "cpu", "cuda", "mps") or dev.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, not {dev!r}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = torch's default), not {self.threads}")
        check_features(self.item_features)


RUN_FIELDS = frozenset(f.name for f in dataclasses.fields(RunSettings))
LR_DECAYS = ("none", "cosine", "cooldown")
OPTIMIZERS = ("adam", "adamw")


@dataclasses.dataclass
class LoopConfig(ModelConfig):
    """What every model trained by `train_by_epochs` sets: epochs, batches, the learning
    rate and weight decay, and when to stop (early stopping, an optional budget)."""

    part: ClassVar[str] = "training"

    epochs: int = setting(200, "most epochs to train (early stopping may end sooner)")
    batch_size: int = setting(128, "training sequences per batch")
    lr: float = setting(1e-3, "peak learning rate")
    weight_decay: float = setting(0.0, "L2 (adam) or decoupled weight decay (adamw)")
    eval_every: int = setting(5, "epochs between validations (early stopping)")
    patience: int = setting(4, "validations without improvement before stopping")
    # Wall-clock budget for training (0 = none: epochs and early stopping end the run);
    # when set, the batches stop at it, mid-epoch if need be, and the run validates
    max_minutes: float = setting(0.0, "wall-clock training budget in minutes (0 = none)")

    def checks(self) -> Checks:
        return {
            "epochs": (self.epochs >= 0, ">= 0"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "lr": (self.lr > 0, "> 0"),
            "weight_decay": (self.weight_decay >= 0, ">= 0"),
            "eval_every": (self.eval_every >= 1, ">= 1"),
            "patience": (self.patience >= 1, ">= 1"),
            "max_minutes": (self.max_minutes >= 0, ">= 0 (0 = no budget)"),
        }


@dataclasses.dataclass
class TrainConfig(LoopConfig):
    """The training settings the epoch-trained sequence generators share; each model's
    Config inherits them and overrides the defaults it needs. Checked when the config is
    built, so a bad value fails at `create`, not at fit time."""

    # none | cosine: a half cosine from `lr` towards 0 over `epochs` | cooldown: `lr`
    # until the last `cooldown` share of `epochs`, then linear steps towards 0 (set
    # `epochs` to what a time budget affords; validation still picks the best epoch)
    lr_decay: str = setting(
        "none",
        "none | cosine (half cosine to 0 over epochs) | cooldown (linear to 0 over the last `cooldown` share)",
    )
    cooldown: float = setting(0.2, "share of epochs the cooldown schedule decays over")
    # adam: Adam, `weight_decay` added to the gradient as an L2 term (the original
    # recipe) | adamw: decoupled decay (AdamW, Loshchilov & Hutter 2019) on the weight
    # matrices and embeddings only, never on biases or norms (as GPT is trained)
    optimizer: str = setting(
        "adam", "adam (decay as an L2 term) | adamw (decoupled decay, weights and embeddings only)"
    )
    # Validate and keep a moving average of the epochs' end weights (this factor × the
    # previous average + the rest × this epoch's; 0 = off, 0.8 ≈ the last 5 epochs)
    average: float = setting(
        0.0, "moving average of the epochs' end weights (0 = off, 0.8 ≈ the last 5 epochs)"
    )
    # Which interactions train: last = each user's last max_len + 1 items (the original
    # SASRec's windows) | all = the whole history, tiled into windows of max_len + 1 from
    # the newest back, so every interaction is a target once (`Histories.tiles`); the
    # context still never exceeds max_len
    windows: str = setting(
        "last",
        "last: each user's last max_len + 1 items | all: the whole history, tiled into windows",
    )
    # Differential privacy (DP-SGD through Opacus, `privacy.PrivateSteps`), the user being
    # the unit: each step Poisson-samples users (batch_size of them expected), one window
    # each, clips every user's gradient to dp_max_grad_norm and adds Gaussian noise
    # calibrated so `epochs` epochs spend at most dp_epsilon at dp_delta
    dp_epsilon: float = setting(
        0.0, "differential privacy: the ε budget of DP-SGD per user (0 = off, no DP)"
    )
    dp_delta: float = setting(0.0, "with dp_epsilon: δ in (0, 1) (0 = 1 / training users)")
    dp_max_grad_norm: float = setting(
        1.0, "with dp_epsilon: each user's gradient is clipped to this L2 norm"
    )

    def checks(self) -> Checks:
        return {
            "lr_decay": (self.lr_decay in LR_DECAYS, f"one of {', '.join(LR_DECAYS)}"),
            "cooldown": (0.0 < self.cooldown <= 1.0, "a share of the epochs in (0, 1]"),
            "optimizer": (self.optimizer in OPTIMIZERS, "adam or adamw"),
            "windows": (self.windows in ("last", "all"), "last or all"),
            "average": (0.0 <= self.average < 1.0, "a weight average's factor in [0, 1)"),
            "dp_epsilon": (
                0 <= self.dp_epsilon < math.inf,
                "a finite privacy budget > 0 (0 = no differential privacy)",
            ),
            "dp_delta": (0 <= self.dp_delta < 1, "in (0, 1) (0 = 1 / the training users)"),
            "dp_max_grad_norm": (0 < self.dp_max_grad_norm < math.inf, "a finite norm > 0"),
        }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dp_epsilon > 0 and self.windows != "last":
            # the privacy unit is a user: one example per user and step
            raise ValueError(
                "dp_epsilon needs windows=last: differential privacy here protects a user, "
                "who must give at most one training window to a step"
            )


def check(checks: Checks, config: Any) -> None:
    """Raise a ValueError naming the first failing setting, its value and what it takes."""
    for name, (ok, takes) in checks.items():
        if not ok:
            raise ValueError(f"{name} must be {takes}, not {getattr(config, name)!r}")
