"""The configuration of a run: pydantic models, YAML in and out, and messages that name the bad field.

Every field has a default, so ``RunConfig(data={"source": "mnist-5k"})`` is a complete run. Unknown keys
are errors (a typo must not silently fall back to a default).

Example:
    >>> cfg = RunConfig.model_validate({"name": "demo", "data": {"source": "mnist-5k"}})
    >>> cfg.train.epochs, cfg.train.steps, cfg.finetune.strategy  # None, None: a budget that follows the data
    (None, None, 'full')

Over 500 lines as one module: the schema is read as one document, every section with its bounds and messages.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from transferkit.errors import ConfigError
from transferkit.field_help import FIELD_HELP

Strategy = Literal["full", "linear-probe", "partial", "lp-ft", "lora"]
STRATEGIES: dict[str, str] = {
    "linear-probe": "freeze the backbone; extract features once (cached) and train only the head",
    "full": "train every parameter; the backbone may get a smaller LR (backbone_lr_mult, layer_decay)",
    "partial": "freeze the first `freeze_stages` stages of the backbone, train the rest",
    "lp-ft": "linear probe first (lp_epochs), then full fine-tuning from that head (Kumar et al., 2022)",
    "lora": "low-rank adapters (PEFT) on the attention projections train, the rest stays frozen; merged on save",
}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


# A config may come from someone else: bounded so that no file can make parsing hang or exhaust memory (a YAML
# "billion laughs" of nested aliases loads instantly but expands to 10⁹ values when copied).
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_NODES = 100_000
MAX_CONFIG_DEPTH = 32
MAX_NAME_LENGTH = 100  # a run or head name becomes a folder or file name: far below the file system's 255 bytes
MAX_SEED = 2**32 - 1  # numpy's seeds stop there
# The bottleneck an adaptation method trains under `model.bottleneck_dim: auto` (the default) on the `mlp` backbone
# (feature vectors), given enough labelled source items to train it. MCC sharpens the head's target predictions: a
# 256-d Linear-BN-ReLU bottleneck under the head helped it on 3 of 4 feature families with full sources and on both
# 10-class families with 50 items per class (450 training items), and lost on both 2-class families with 50 per
# class (90 items); 200 sits between (docs/defaults.md). DAN's result was a coin toss: none.
MLP_BOTTLENECK_BY_METHOD = {"mcc": 256}
MIN_ITEMS_FOR_METHOD_BOTTLENECK = 200


def default_bottleneck(method: str, backbone: str, strategy: str, source_items: int | None = None) -> int | None:
    """The bottleneck width ``method`` trains with under ``model.bottleneck_dim: auto`` (None: none);
    ``source_items`` (labelled source training items) None: as for a large source."""
    if backbone != "mlp" or strategy == "linear-probe":
        return None
    if source_items is not None and source_items < MIN_ITEMS_FOR_METHOD_BOTTLENECK:
        return None
    return MLP_BOTTLENECK_BY_METHOD.get(method)


def bottleneck_width(cfg: RunConfig, source_items: int | None = None) -> int | None:
    """``model.bottleneck_dim`` as the run builds it: a number or None as set, ``auto`` resolved by
    :func:`default_bottleneck` for the run's method (``auto``'s candidates: each for its own)."""
    m = cfg.model
    if m.bottleneck_dim != "auto":
        return m.bottleneck_dim
    return default_bottleneck(cfg.adapt.method, m.backbone, cfg.finetune.strategy, source_items)


# Settings that change how a run is carried out, not what it computes: a resume may change them, and a cached
# source-only model (train/twin_cache.py) does not depend on them.
RESUME_MAY_CHANGE = frozenset({
    "train.threads", "train.checkpoint_every_steps", "train.checkpoint_every_minutes", "train.keep_checkpoints",
    "train.keep_finished_checkpoints",
    "data.num_workers", "data.cache_mb", "tracking.log_to", "tracking.mlflow_uri", "tracking.experiment",
})


class _Strict(BaseModel):
    # NaN and ±inf are refused everywhere: `weight_decay: 1e400` (inf in YAML) trained a model of NaN weights
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bools_for_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        """pydantic reads ``true`` as 1 in a number field: ``--set train.epochs=true`` trained one epoch and
        ``train.lr: true`` an LR of 1. A field takes true/false only where its type says bool."""
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and _holds_bool(v) and not _takes_bool(field.annotation):
            raise ValueError("takes a number or a name, not true/false (YAML reads unquoted yes/no/on/off as "
                             "true/false: quote a name, e.g. 'off')")
        return v


class DataConfig(_Strict):
    """Where the data comes from. ``source`` is labelled; ``target`` labels only score the final model."""

    source: str | list[str] = Field("mnist-5k", description=FIELD_HELP["data.source"])
    multi_source: Literal["per-source", "k+1-way", "pooled"] = Field(
        "per-source", description="several sources: per-source (DANN: one discriminator per source against the target; "
        "DAN/JAN/CORAL: one loss per source, averaged), k+1-way (DANN: one discriminator naming each source and the "
        "target), or pooled (all of them as one source domain)"
    )
    source_weighting: Literal["none", "discrepancy"] = Field(
        "none", description="several sources: weight each source's items (task loss and transfer terms) by its "
        "measured closeness to the target, w_k ∝ exp(-MMD²_k / mean MMD²), mean 1"
    )
    target: str | None = Field(None, description=FIELD_HELP["data.target"])
    train_split: str = "train"
    eval_split: str = Field("test", description="split on which the selected model is scored")
    source_per_class: Annotated[int, Field(ge=1)] | None = Field(
        None, description="train on only K labelled source items per class (few-shot), chosen by seed"
    )
    target_labels_per_class: Annotated[int, Field(ge=1)] | None = Field(
        None, description=FIELD_HELP["data.target_labels_per_class"]
    )
    val_fraction: Annotated[float, Field(ge=0.0, lt=0.9)] | None = Field(
        None, description="share of the training split held out to select the checkpoint (0: keep the last; "
        "default: 0.1 where that holds out at least 10 items per class, else 0)"
    )
    val_split: str | None = Field(None, description="use this existing split for validation instead")
    batch_size: Annotated[int, Field(ge=1, le=65536)] = Field(64, description=FIELD_HELP["data.batch_size"])
    eval_batch_size: Annotated[int, Field(ge=1, le=65536)] = 256
    num_workers: Annotated[int, Field(ge=0, le=64)] = 0
    augment: bool = Field(
        False, description="random resized crops and flips on training images (timm/torchvision backbones; not "
        "for linear-probe, whose features are extracted once)"
    )
    augment_min_scale: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.08, description="smallest crop area of data.augment's RandomResizedCrop (raise it where a small defect "
        "must stay in the crop)"
    )
    cache_mb: Annotated[int, Field(ge=0)] = Field(
        1024, description="keep each dataset's preprocessed inputs in RAM up to this many MiB (0: redo every epoch)"
    )
    root: str | None = Field(None, description="benchmark data root (default: $TRANSFERKIT_DATA)")

    @field_validator("source")
    @classmethod
    def _sources(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list):
            if not v:
                raise ValueError("give at least one source")
            if len(set(v)) != len(v):
                raise ValueError(f"the sources must be distinct, got {v}")
            return v[0] if len(v) == 1 else v
        return v

    @property
    def sources(self) -> list[str]:
        """The source domains as a list (one item for a single source)."""
        return list(self.source) if isinstance(self.source, list) else [self.source]

    @model_validator(mode="after")
    def _selection_split_is_not_the_scored_split(self) -> DataConfig:
        if self.val_split is not None and self.val_split == self.eval_split:
            raise ValueError(
                f"val_split and eval_split are both {self.eval_split!r}: a split that chose the checkpoint "
                "cannot score it honestly; drop val_split (a share of the training split is held out instead)"
            )
        return self


class ModelConfig(_Strict):
    backbone: str = Field("lenet", description=FIELD_HELP["model.backbone"])
    weights: str | None = Field(None, description=FIELD_HELP["model.weights"])
    pretrained: bool = Field(False, description=FIELD_HELP["model.pretrained"])
    trust_pickle: bool = Field(False, description=FIELD_HELP["model.trust_pickle"])
    backbone_kwargs: dict[str, Any] = Field(default_factory=dict)
    head_dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    bottleneck_dim: Annotated[int, Field(ge=1, le=65536)] | Literal["auto"] | None = Field(
        "auto", description="Linear-BN-ReLU bottleneck between backbone and head (where domains are aligned); "
        "auto: the method's own default (256 for MCC on an mlp with at least 200 labelled source items, else none)"
    )
    heads: list[HeadConfig] = Field(
        default_factory=list, max_length=64,
        description="task heads on the shared features (multi-task, regression); default: "
        "one classification head on the dataset's classes"
    )
    head_weighting: Literal["fixed", "uncertainty"] = Field(
        "fixed", description="combine the heads' losses with their fixed weights, or learn them (homoscedastic "
        "uncertainty, Kendall et al., 2018)"
    )
    init_from: str | None = Field(None, description=FIELD_HELP["model.init_from"])

    @model_validator(mode="after")
    def _weights_xor_pretrained(self) -> ModelConfig:
        if self.weights is not None and self.pretrained:
            raise ValueError("give either model.weights or model.pretrained, not both")
        if self.init_from is not None and (self.weights is not None or self.pretrained):
            raise ValueError("model.init_from gives every weight already: drop model.weights / model.pretrained")
        return self

    @field_validator("heads")
    @classmethod
    def _distinct_heads(cls, v: list[HeadConfig]) -> list[HeadConfig]:
        names = [h.name for h in v]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise ValueError(f"head names must be distinct; {', '.join(map(repr, clash))} is used more than once")
        return v

    @property
    def primary_kind(self) -> str:
        return self.heads[0].kind if self.heads else "classification"

    @property
    def primary_reads_labels(self) -> bool:
        """The primary head classifies the dataset's own labels (what the guard, few target labels and label-free
        selection compare against)."""
        return not self.heads or (self.heads[0].field == "label" and self.heads[0].kind == "classification")

    @property
    def reads_labels(self) -> bool:
        """Some head is trained on the dataset's own class labels."""
        return not self.heads or any(h.field == "label" for h in self.heads)


HeadKind = Literal["classification", "multilabel", "regression"]


class HeadConfig(_Strict):
    """One task head on the shared features. The first head of ``model.heads`` is the primary one: it selects the
    checkpoint (validation accuracy, or MAE for regression) and its outputs are what adaptation methods read."""

    name: str = Field(description="the head's name in reports and the saved model")
    kind: HeadKind = "classification"
    field: str = Field(
        "label", description="what the head predicts: `label` (the dataset's classes) or a per-item field of the "
        "dataset (a text table's numeric column such as `rating`, FSDD's `speaker`, a multi-label column)"
    )
    weight: Annotated[float, Field(ge=0.0, le=1e6)] = Field(
        1.0, description="its loss weight (model.head_weighting fixed); its starting weight, > 0, with uncertainty"
    )
    loss: Literal["auto", "cross-entropy", "bce", "mse", "huber"] = Field(
        "auto", description="auto: cross-entropy (classification), bce (multilabel), mse (regression)"
    )
    huber_delta: Annotated[float, Field(gt=0.0)] = Field(1.0, description="the Huber loss's threshold (loss huber)")

    @field_validator("name")
    @classmethod
    def _safe_head_name(cls, v: str) -> str:
        from transferkit.tasks import head_name_problem  # lazy: `import transferkit.config` stays free of torch

        problem = head_name_problem(v)
        if problem is not None:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _loss_fits_kind(self) -> HeadConfig:
        allowed = {"classification": ("auto", "cross-entropy"), "multilabel": ("auto", "bce"),
                   "regression": ("auto", "mse", "huber")}[self.kind]
        if self.loss not in allowed:
            raise ValueError(f"head {self.name!r}: a {self.kind} head takes loss {' or '.join(allowed)}, "
                             f"got {self.loss!r}")
        return self


class FinetuneConfig(_Strict):
    strategy: Strategy = Field("full", description=FIELD_HELP["finetune.strategy"])
    freeze_stages: Annotated[int, Field(ge=0, le=10000)] = Field(0, description="stages frozen by `partial`")
    backbone_lr_mult: Annotated[float, Field(ge=0.0, le=10.0)] = Field(
        1.0, description="backbone LR = lr x this (the classic 0.1)"
    )
    layer_decay: Annotated[float, Field(gt=0.0, le=1.0)] | None = Field(
        None, description="layer-wise LR decay: stage i of n gets lr x decay^(n - i)"
    )
    lp_epochs: Annotated[int, Field(ge=1, le=100000)] = Field(
        10, description="epochs of the linear-probe phase (lp-ft)"
    )
    lp_lr: Annotated[float, Field(gt=0.0)] | None = Field(None, description="LR of the linear-probe phase")
    probe_solver: Literal["auto", "lbfgs", "sgd"] = Field(
        "auto", description="linear-probe: lbfgs = L2 logistic regression solved to convergence on the cached "
        "features; sgd = the engine's optimiser; auto = lbfgs for a plain classification probe without "
        "train.epochs/steps"
    )
    probe_c: Annotated[float, Field(gt=0.0, le=1e6)] | None = Field(
        1.0, description="lbfgs probe: inverse L2 strength C (scikit-learn's; loss = Σ CE + ‖W‖²/2C); null: chosen "
        "from 0.01-100 by 5-fold cross-validation on the source's training split"
    )
    freeze_bn: bool = Field(
        False, description="keep every BatchNorm's running statistics while fine-tuning (small batches; LP-FT, "
        "whose head was fitted to features normalised by those statistics)"
    )
    regularizers: list[Literal["l2-sp", "bss"]] = Field(
        default_factory=list, max_length=2, description="regularised fine-tuning: l2-sp (decay towards the "
        "pre-trained weights) and/or bss (shrink the batch features' smallest singular values)"
    )
    l2_sp_alpha: Annotated[float, Field(ge=0.0, le=100.0)] = Field(
        0.01, description="L2-SP: weight of the backbone's squared distance from its starting point"
    )
    l2_sp_beta: Annotated[float, Field(ge=0.0, le=100.0)] = Field(0.01, description="L2-SP: L2 weight of the new head")
    bss_weight: Annotated[float, Field(ge=0.0, le=100.0)] = Field(0.001, description="BSS: η")
    bss_k: Annotated[int, Field(ge=1, le=4096)] = Field(1, description="BSS: how many smallest singular values")
    lora_r: Annotated[int, Field(ge=1, le=1024)] = Field(8, description="rank of the LoRA adapters (lora)")
    lora_alpha: Annotated[float, Field(gt=0.0)] = Field(16.0, description="LoRA scaling: updates are x alpha/r")
    lora_dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    lora_targets: list[Annotated[str, Field(max_length=200)]] | None = Field(
        None, description="last names of the Linear layers to adapt (default: the attention query/value projections)"
    )


class AdaptConfig(_Strict):
    """Domain adaptation: L = L_source + λ(p) · L_transfer, with unlabelled target batches."""

    method: str = Field("none", description=FIELD_HELP["adapt.method"])
    weight: Annotated[float, Field(ge=0.0, le=1e6)] | None = Field(None, description=FIELD_HELP["adapt.weight"])
    target_weight: Annotated[float, Field(ge=0.0, le=1e6)] = Field(
        1.0, description="λ_t: weight of the cross-entropy on the labelled target items (data.target_labels_per_class)"
    )
    schedule: Literal["constant", "ramp"] = Field(
        "constant", description="λ(p): constant, or ramp = λ·(2/(1+exp(-10p)) - 1)"
    )
    target_schedule: Literal["constant", "ramp"] = Field(
        "constant", description="λ_t(p) of the labelled target items' loss: constant, or the same ramp"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="method options (see `transferkit methods`)")
    guard: bool = Field(True, description="also train source-only and fall back to it when adaptation looks worse")
    guard_max_source_drop: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.05, description="guard: largest loss of source-validation accuracy adaptation may cost"
    )
    guard_gap_alpha: Annotated[float, Field(gt=0.0, lt=1.0)] | None = Field(
        None, description="guard: fall back when adaptation widens the MMD² gap at this significance (null, the "
        "default: measured and reported, not used; see docs/defaults.md)"
    )
    guard_absent_weight: Annotated[float, Field(gt=0.0, lt=1.0)] | None = Field(
        None, description="guard: class weight below which a source class counts as absent from the target, for "
        "targets that may lack some source classes (e.g. 0.1; null, the default: off; see docs/defaults.md)"
    )
    guard_flip_check: bool = Field(
        True, description="guard: fall back when adaptation relabels more of the surest target half than the "
        "source-only model's estimated error"
    )
    guard_validator: str | None = Field(None, description="guard: also require this label-free validator to agree")
    auto_methods: list[str] = Field(
        default_factory=lambda: ["dan", "mcc"], min_length=1, max_length=8,
        description="method auto: the adaptation methods tried next to source-only (each at its default λ)"
    )
    auto_validator: str = Field("info_max", description="method auto: the label-free validator that chooses "
                                "(chosen with benchmarks/auto_selection.py; docs/defaults.md)")
    auto_warm_start: bool = Field(
        True, description="method auto: each adapted candidate starts from the trained source-only model (the "
        "layers that fit) and trains half its steps; false: all of them from scratch (docs/defaults.md)"
    )

    # Whether the method and validator names are registered is checked above this layer, where the registries live
    # (pipeline.model.check_names: before a run or a sweep writes anything); config stays below adapt and measure.
    @field_validator("auto_methods")
    @classmethod
    def _each_method_once(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each method once")
        return v


class TrainConfig(_Strict):
    epochs: Annotated[int, Field(ge=1, le=100000)] | None = Field(None, description=FIELD_HELP["train.epochs"])
    steps: Annotated[int, Field(ge=1, le=10_000_000)] | None = Field(
        None, description="optimiser steps to train, instead of epochs"
    )
    lr: Annotated[float, Field(gt=0.0, le=10.0)] = Field(1e-3, description=FIELD_HELP["train.lr"])
    optimizer: Literal["adamw", "sgd"] = "adamw"
    memory_format: Literal["auto", "channels_last", "contiguous"] = Field(
        "auto", description="layout of image batches and convolution weights while training; auto: channels_last "
        "for a convolutional network on a CPU (faster there, same arithmetic)"
    )
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    weight_decay: Annotated[float, Field(ge=0.0, le=10.0)] = 1e-4
    scheduler: Literal["cosine", "constant", "step"] = "cosine"
    warmup_epochs: Annotated[float, Field(ge=0.0, le=100000)] = 0.0
    grad_accum_steps: Annotated[int, Field(ge=1, le=1024)] = 1
    max_grad_norm: Annotated[float, Field(gt=0.0)] | None = None
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    early_stopping_patience: Annotated[int, Field(ge=1)] | None = None
    keep_checkpoints: Annotated[int, Field(ge=1)] = Field(1, description="epoch checkpoints kept besides the best")
    keep_finished_checkpoints: bool = Field(
        False, description="keep a seed's checkpoints once it has finished (its model.safetensors and report are "
        "written; a resume needs checkpoints only of an unfinished seed)"
    )
    checkpoint_every_steps: Annotated[int, Field(ge=1)] | None = Field(
        None, description="also checkpoint within an epoch every this many steps (--resume continues at that step)"
    )
    checkpoint_every_minutes: Annotated[float, Field(gt=0.0)] | None = Field(
        10.0, description="also checkpoint within an epoch when this many minutes passed since the last checkpoint"
    )
    threads: Annotated[int, Field(ge=1, le=1024)] | None = Field(None, description="torch intra-op threads (CPU)")
    compile: Literal["off", "default", "reduce-overhead"] = Field(
        "off", description="torch.compile the model's training forward and backward: default (fused kernels), "
        "reduce-overhead (also CUDA graphs: for small models a GPU would otherwise wait on). Costs a compilation "
        "(tens of seconds) per run; off by default: not yet measured across tasks"
    )
    sync_every_steps: Annotated[int, Field(ge=1, le=100_000)] | None = Field(
        None, description="how often the host reads the training numbers back from the device (the loss shown, "
        "the divergence check, a time-based checkpoint); default: every step on a CPU (free there), every 50 on a "
        "GPU (each read makes the host wait for the device)"
    )
    sync_bn: bool = Field(
        False, description="under `accelerate launch` on GPUs: BatchNorm statistics over every process's batch "
        "(torch.nn.SyncBatchNorm)"
    )


    @model_validator(mode="after")
    def _epochs_or_steps(self) -> TrainConfig:
        if self.epochs is not None and self.steps is not None:
            raise ValueError("give train.epochs or train.steps, not both")
        return self

    @model_validator(mode="after")
    def _graphs_keep_no_gradients(self) -> TrainConfig:
        if self.compile == "reduce-overhead" and self.grad_accum_steps > 1:
            raise ValueError("train.compile reduce-overhead cannot accumulate gradients (train.grad_accum_steps > 1): "
                             "a CUDA graph's next replay overwrites the gradients it produced; use compile: default")
        return self


class TrackingConfig(_Strict):
    """Where metrics go besides the run directory's own metrics.jsonl and report."""

    log_to: list[Literal["csv", "tensorboard", "mlflow"]] = Field(
        default_factory=list, description=FIELD_HELP["tracking.log_to"]
    )
    mlflow_uri: str | None = Field(
        None, description="MLflow tracking URI (a server, a database sqlite:///PATH or a folder, MLflow's file "
        "store); default: sqlite:///<output_dir>/mlflow.db"
    )
    experiment: str = Field("transferkit", description="MLflow experiment name")


class RunConfig(_Strict):
    name: str = Field("run", description=FIELD_HELP["name"])
    output_dir: str = Field("runs", description=FIELD_HELP["output_dir"])
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(
        default_factory=lambda: [0], min_length=1, max_length=1000, description=FIELD_HELP["seeds"]
    )
    online: bool = Field(False, description=FIELD_HELP["online"])
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    adapt: AdaptConfig = Field(default_factory=AdaptConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        problem = run_name_problem(v)
        if problem is not None:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _tracking_stays_offline(self) -> RunConfig:
        uri = self.tracking.mlflow_uri
        if uri is not None and not self.online and not _local_tracking_uri(uri):
            raise ValueError(
                f"tracking.mlflow_uri {uri!r} is a server; runs are offline unless you pass --online (or set "
                "online: true). Offline, use a local store: sqlite:///PATH or a folder"
            )
        return self

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, got {v}")
        return v

    @property
    def run_path(self) -> Path:
        return Path(self.output_dir) / self.name

    # -- YAML -----------------------------------------------------------------------------------
    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
        p = Path(path)
        return parse_config(load_yaml_mapping(p, "config file"), overrides, source=str(p))


def _holds_bool(value: Any) -> bool:
    """A bool, or a list of values with a bool among them (``seeds: [true]``)."""
    return isinstance(value, bool) or (isinstance(value, (list, tuple)) and any(isinstance(x, bool) for x in value))


def _takes_bool(annotation: Any) -> bool:
    """Whether a field's type admits a bool anywhere (bool itself, Any, ``Literal[True]``, in a union or a list)."""
    import typing

    if annotation is bool or annotation is Any:
        return True
    if typing.get_origin(annotation) is Literal:
        return any(isinstance(a, bool) for a in typing.get_args(annotation))
    return any(_takes_bool(a) for a in typing.get_args(annotation))


def run_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a run's folder inside its output folder, or None: the one rule for every command that
    names a run (fit's ``name``, ``demo --name``, each sweep candidate)."""
    if not _NAME_RE.fullmatch(name) or ".." in name or len(name) > MAX_NAME_LENGTH:
        return (f"use up to {MAX_NAME_LENGTH} letters, digits, '.', '_' and '-' only (no '/', no '..', no spaces or "
                "line breaks); it names a folder")
    return None


def load_yaml_mapping(path: Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file's top-level mapping, read within bounds (size, values after aliases expand, depth); ConfigError
    naming the file for anything else: missing, too large, not UTF-8, not YAML, not a mapping."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {p} does not exist" if not p.exists() else f"{what} {p} is not a file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {p}: {exc.strerror or exc}") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} {p} is {len(data):,} bytes; a run config is at most {MAX_CONFIG_BYTES >> 20} MiB")
    try:
        raw = yaml.safe_load(data.decode("utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {p} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise ConfigError(f"{what} {p} nests deeper than a config can (over {MAX_CONFIG_DEPTH} levels)") from None
    except Exception as exc:  # YAMLError, and PyYAML's constructors' own (`!!float x`)
        raise ConfigError(f"{what} {p} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {p} must hold a mapping at the top level, got {type(raw).__name__}")
    return _bounded_copy(raw, str(p))


def parse_config(raw: dict[str, Any], overrides: dict[str, Any] | None = None, source: str = "config") -> RunConfig:
    """Validate a raw mapping (plus dotted ``overrides``) into a :class:`RunConfig` or raise ConfigError."""
    data = _bounded_copy(raw, source)
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, _bounded_copy(value, f"override {dotted}"))
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.lr=0.01"`` -> ``("train.lr", 0.01)``; the value is read as YAML (numbers, lists, null)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like section.field=value, e.g. train.lr=0.01")
    try:
        parsed = yaml.safe_load(value)
    except Exception as exc:  # YAMLError, and PyYAML's constructors' own errors (2020-13-45, !!timestamp 1-2-3)
        raise ConfigError(f"override {text!r}: value is not valid YAML: {exc}") from exc
    if isinstance(parsed, str) and _FLOAT_RE.match(parsed.strip()):
        parsed = float(parsed)  # YAML 1.1 reads "1e-4" as a string; a user means the number
    return key.strip(), parsed


def format_validation_error(exc: ValidationError, source: str = "config") -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int) or True)
        if err["type"] == "extra_forbidden":
            hint = _suggest(err["loc"])
            lines.append(f"{source}: unknown field `{loc}`{hint}")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, dict) else f" (got {_short_repr(got)})"
            lines.append(f"{source}: field `{loc}`: {err['msg']}{shown}")
    return "; ".join(lines)


def field_problem(loc: str, message: str, got: Any, source: str = "config") -> str:
    """A field's bad value in the words :func:`format_validation_error` uses, for checks made above this layer."""
    return f"{source}: field `{loc}`: Value error, {message} (got {_short_repr(got)})"


def _short_repr(value: Any) -> str:
    """A value for an error message, cut short: a config value can be as large as the config."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring, r.maxother, r.maxlist, r.maxtuple, r.maxdict, r.maxlevel = 80, 80, 6, 6, 6, 2
    return r.repr(value)


def _suggest(loc: tuple[Any, ...]) -> str:
    model: type[BaseModel] = RunConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean `{close[0]}`?)" if close else f" (known: {', '.join(model.model_fields)})"


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {dotted!r}: `{part}` is not a section")
        node = nxt
    node[parts[-1]] = value


def _bounded_copy(value: Any, source: str) -> Any:
    """A deep copy that stops with a ConfigError past :data:`MAX_CONFIG_NODES` values or :data:`MAX_CONFIG_DEPTH`
    levels: YAML aliases share one object however often they are used, so a file of a few lines can stand for 10⁹
    values, and copying (or validating) them would hang. A self-referencing alias is refused too."""
    count = 0

    def copy(v: Any, depth: int) -> Any:
        nonlocal count
        count += 1 + (len(v) // 16 if isinstance(v, str) else 0)  # long strings count by their size
        if count > MAX_CONFIG_NODES:
            raise ConfigError(f"{source}: the configuration expands to more than {MAX_CONFIG_NODES:,} values or "
                              "about 1.6 MB of text (YAML aliases repeated inside each other?); a run config is far "
                              "smaller")
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"{source}: the configuration nests deeper than {MAX_CONFIG_DEPTH} levels (or a YAML "
                              "alias refers to itself)")
        if isinstance(v, dict):
            return {k: copy(x, depth + 1) for k, x in v.items()}
        if isinstance(v, list):
            return [copy(x, depth + 1) for x in v]
        return v

    return copy(value, 0)


def _local_tracking_uri(uri: str) -> bool:
    """An MLflow store on this machine: ``sqlite:``, ``file:`` or a plain folder (not ``databricks``, no server)."""
    from urllib.parse import urlparse

    scheme = urlparse(uri).scheme.lower()
    if scheme in ("sqlite", "file"):
        return True
    if len(scheme) == 1 and uri[1:3] in (":\\", ":/"):  # a Windows drive letter
        return True
    return scheme == "" and uri.split(":", 1)[0].lower() not in ("databricks", "databricks-uc", "uc")
