"""Typed pretraining configuration: dataclasses, YAML/JSON files, named configs, ``--set`` overrides.

A config is a tree of dataclasses (:class:`PretrainConfig`). Files (YAML or JSON) and overrides are
checked against the field types: an unknown key or a value of the wrong type raises
:class:`ConfigError` naming the dotted key, the expected type and the value found.

Named configs live in ``melp/train/configs/<name>.yaml`` (``melp-tiny``, ``melp-paper``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from melp.config import ConfigError, apply_overrides, build

__all__ = [
    "ConfigError", "apply_overrides", "PretrainConfig", "DataConfig", "ValSetConfig", "ModelConfig", "LossConfig",
    "OptimConfig", "ValConfig", "TrainerConfig", "from_dict", "to_dict", "list_configs", "load_config",
    "save_config",
]  # fmt: skip

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class DataConfig:
    """Pretraining data: a store written by ``melp prepare``."""

    store: str = ""  # path to the store folder
    split: str | None = None  # manifest `split` value to train on (e.g. "train"); None = use folds
    folds: list[int] | None = None  # manifest `fold` values to train on (e.g. [1..8])
    limit: int = 0  # keep only the first N selected rows (0 = all); for smoke tests
    lead_mask_p: float = 0.5  # random lead masking probability per lead
    max_shift_s: float = 0.0  # random start offset up to this many seconds (0 = off; the paper: off)
    noise_std: float = 0.0  # Gaussian noise on the normalised signal (0 = off; the paper: off)
    normalize: str = "minmax"
    batch_size: int = 64  # per device
    num_workers: int = 0
    pin_memory: bool = False
    drop_last: bool = True


@dataclass
class ValSetConfig:
    """One zero-shot validation set: a downstream task of a store, restricted to some rows."""

    store: str = ""
    task: str = "super_class"
    split: str | None = None
    folds: list[int] | None = None
    limit: int = 0
    name: str = ""  # log name; default "<task>"


@dataclass
class ModelConfig:
    """Which model to build: a registry name / JSON path, plus nested overrides of its config."""

    name: str = "melp-tiny"
    text: str | None = None  # text tower name_or_path (e.g. an MLM-adapted folder); None = config's
    overrides: dict[str, Any] = field(default_factory=dict)  # deep-merged into the model config
    init: str | None = None  # start from a saved model folder (load_model) instead of create_model
    freeze: list[str] = field(default_factory=list)  # parameter-name prefixes to freeze, e.g. ["text."]
    # compact caption output layer over the tokens of the training reports (restrict_caption_vocab)
    caption_vocab_from_reports: bool = False
    # memoise the text tower's features per report (needs freeze: [text.]); see
    # MELPModel.cache_text_features. Removes the text tower from the step cost.
    cache_text: bool = False
    # torch.compile the training forward and the losses as one graph (melp.train.step.compile_forward)
    compile: bool = False
    compile_backend: str = "inductor"  # any torch.compile backend ("aot_eager" compiles fast, no codegen)


@dataclass
class LossConfig:
    """Loss weights (lambda_clip, lambda_caption, lambda_beat)."""

    clip: float = 1.0
    caption: float = 2.0
    beat: float = 0.2
    # false (default) = the paper's objective: plain one-hot CLIP and beat targets; true = identical
    # reports in a batch are not negatives of each other (a deviation; melp-tiny uses it)
    soft_duplicates: bool = False
    # weight of the beat-diversity regulariser (mean squared cosine between an ECG's beat slots);
    # 0 = off (the paper)
    diversity: float = 0.0


@dataclass
class OptimConfig:
    """AdamW and the per-step schedule (linear warmup, cosine decay to ``min_lr_ratio * lr``)."""

    lr: float = 2e-4
    weight_decay: float = 0.2
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    warmup_steps: int = 0  # > 0 wins over warmup_frac
    warmup_frac: float = 0.03
    min_lr_ratio: float = 0.0
    grad_clip: float = 0.0  # 0 = no clipping
    text_lr_mult: float = 1.0  # learning-rate multiplier for the text tower parameters


@dataclass
class ValConfig:
    """Zero-shot validation during pretraining."""

    sets: list[ValSetConfig] = field(default_factory=list)
    every_n_steps: int = 0  # validate every N training batches (0 = once per epoch)
    batch_size: int = 128
    prompts: str | None = None  # prompt JSON path (default: the packaged prompts)
    # at each validation, the beat level (melp.eval.beats.beat_diagnostics) of this many records of the
    # first validation set, logged as val/beat_* (0 = off)
    beat_records: int = 32


@dataclass
class TrainerConfig:
    """Lightning trainer settings."""

    max_epochs: int = 10
    max_steps: int = -1  # > 0 overrides max_epochs (and fixes the schedule length)
    stop_at_step: int = 0  # stop early at this step, schedule unchanged (simulates an interruption)
    accumulate_grad_batches: int = 1
    precision: str = "32-true"  # or "bf16-mixed"
    accelerator: str = "auto"
    devices: int | str = 1  # processes per node, or "auto" (every GPU of the node; 1 on CPU)
    num_nodes: int = 1
    # handed to Lightning: "auto" (ddp when > 1 process), "ddp", "ddp_spawn", "fsdp", "deepspeed_stage_2", ...
    strategy: str = "auto"
    log_every_n_steps: int = 10
    ckpt_every_n_steps: int = 0  # also save "last" every N steps (0 = only at validation / end)
    save_top_k: int = 2  # best checkpoints kept by val/mean_auroc (best-stepNNNNNN.ckpt)
    # stop after this many validations without a new best val/mean_auroc (0 = never stop early)
    early_stopping_patience: int = 5
    loggers: list[str] = field(default_factory=lambda: ["csv", "tensorboard"])  # + "wandb", "mlflow"
    experiment: str = "melp"  # project / experiment name for wandb and mlflow
    deterministic: bool = False
    matmul_precision: str = "high"
    progress_bar: bool = True
    collapse_check: bool = True


@dataclass
class PretrainConfig:
    """The whole pretraining run."""

    out: str = "runs/melp"
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    val: ValConfig = field(default_factory=ValConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


# --------------------------------------------------------------------------- type checking


def from_dict(values: dict) -> PretrainConfig:
    """Build a :class:`PretrainConfig` from a nested mapping (missing keys keep their defaults)."""
    return build(PretrainConfig, values or {})


def to_dict(cfg: PretrainConfig) -> dict:
    """The config as plain nested dicts/lists (YAML/JSON serialisable)."""
    return dataclasses.asdict(cfg)


def list_configs() -> list[str]:
    """Names of the packaged named configs."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(name_or_path: str | Path) -> PretrainConfig:
    """Load a named config (``melp-tiny``) or a YAML/JSON file."""
    path = Path(name_or_path)
    if not path.is_file():
        named = CONFIG_DIR / f"{name_or_path}.yaml"
        if not named.is_file():
            raise ConfigError(
                f"config '{name_or_path}' is neither a file nor a named config "
                f"(named configs: {', '.join(list_configs())})"
            )
        path = named
    text = path.read_text()
    try:
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot parse config file {path}: {err}") from err
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"config file {path} must contain a mapping at the top level")
    try:
        return from_dict(values or {})
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def save_config(cfg: PretrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
