"""Typed configuration: dataclasses, YAML loading with `base:` inheritance, `section.key=value` overrides.

A run is described by one `Config` with five sections (model, data, diffusion, train, sample). Every field
has a default taken from the papers (or a one-line reason where minidp deviates); YAML files hold only
overrides. The resolved config is written next to every run (`config.yaml`) and stored inside every
checkpoint, so a run can always be rebuilt from what it wrote.

Notable choices:
- YAML is read with `yaml.safe_load` only (no tags, no code); CLI values are parsed the same way, so
  `train.lr=3e-5` and `sample.steps=10` are typed, then checked against the field's declared type.
- Every mistake is a `ConfigError` with one readable line: the file, the key, the closest valid key (difflib),
  the expected type. Scripts print it and exit with status 2; they never show a traceback for bad input.
- `base: other.yaml` (relative to the file that says it) is applied first; chains are allowed, cycles are errors.
"""

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from minidp import ddim, ensemble, schedules, tasks


class ConfigError(ValueError):
    """A bad config file, key, value or override; the message is one line that says what to fix."""


# ----------------------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------------------

@dataclass
class ModelConfig:
    preset: str = "tiny"             # a name from dit.DiT_models (e.g. "DiT-S/2", "a1", "tiny")
    learn_sigma: bool = False        # DiT's learned variance; DDIM ignores it, so minidp trains without it
    class_dropout_prob: float = 0.1  # DiT: labels dropped with p = 0.1 for classifier-free guidance
    balance_alpha: float = 0.01      # DiT-MoE's balance-loss weight, for MoE presets and upcycled models (0: off)
    upcycle_experts: int = 8         # E when train.upcycle_from turns a dense checkpoint into an MoE (paper §4.4)
    upcycle_top_k: int = 2           # k; upcycled routers renormalise top-k weights, so training starts from the dense model
    upcycle_every: int = 1           # 1: every block's MLP becomes an MoE layer; 2: every other block


@dataclass
class DataConfig:
    dataset: str = "world"           # "world": the procedural synthetic world (minidp/world.py); see tasks.DATASET_TASKS
    task: str = "class"              # class (pre-training) | depth | flow | amodal | referring (minidp/tasks.py)
    resolution: int = 32             # square image size in pixels (the world renders any size 16..256)
    num_classes: int = 10            # K classes of the world's pre-training labels
    seed: int = 0                    # world seed: scene i of the dataset is world.render([i], seed=seed)
    train_size: int = 4096           # training scenes are indices 0..train_size-1 (rendered once, ~17 KB each at 32 px)
    val_size: int = 64               # validation scenes are indices val_offset..val_offset+val_size-1
    val_offset: int = 10_000_000     # far from the training indices, so validation scenes are never trained on


@dataclass
class DiffusionConfig:
    schedule: str = "linear"         # linear | scaled_linear | cosine (diffusers' names; REFERENCE.md §1)
    beta_start: float | None = None  # None = the schedule's paper default (1e-4 linear, 0.00085 scaled_linear)
    beta_end: float | None = None    # None = the schedule's paper default (0.02 linear, 0.012 scaled_linear)
    T: int = 1000                    # training timesteps
    zero_terminal_snr: bool = False  # Lin et al.'s rescale of the schedule
    prediction: str = "eps"          # eps (DiT) | v (Marigold) | x0 (ADDP with augmentation)
    timestep_weights: list[float] = field(default_factory=list)  # ADDP's c_t^2 per group of T/G steps; [] = uniform t


@dataclass
class TrainConfig:
    mode: str = "pretrain"           # pretrain (class-conditional) | finetune (a perception task)
    out_dir: str = "runs/pretrain"   # config.yaml, log.jsonl, ckpt.pt, eval.json, figures/ land here
    init_from: str = ""              # checkpoint to fine-tune from ("" = from scratch)
    init_optional: bool = False      # True: a missing init_from is not an error; train from scratch and say so
    upcycle_from: str = ""           # a dense checkpoint to upcycle into an MoE and continue fine-tuning ("" = none)
    steps: int = 1000                # optimiser steps
    global_batch: int = 256          # DiT: 256 over all ranks and accumulation micro-steps
    micro_batch: int = 0             # per-rank batch of one forward; 0 = global_batch / world_size (no accumulation)
    lr: float = 1e-4                 # DiT: AdamW 1e-4
    lr_schedule: str = "constant"    # constant (DiT) | exp (Marigold: exponential decay to lr_final)
    lr_final: float = 1e-6           # exp schedule's last value (the scaling paper: 3e-5 -> 3e-7)
    warmup_steps: int = 0            # linear warm-up (Marigold: 100)
    weight_decay: float = 0.0        # DiT: 0
    grad_clip: float = 1.0           # max global grad norm; 0 disables (DiT does not clip; tiny runs are steadier with it)
    ema_decay: float = 0.9999        # DiT: 0.9999; short runs need less (configs say why)
    seed: int = 0                    # seeds the initial weights and every step's batch plan (minidp/recipe.py)
    cond_drop_prob: float = 0.05     # text-conditioned tasks: drop text, image, both, with p each (InstructPix2Pix)
    log_every: int = 50              # steps between log lines / JSONL records
    ckpt_every: int = 500            # steps between checkpoints (one is always written at the end)
    eval_every: int = 0              # steps between evaluations (0 = only at the end)
    device: str = "auto"             # auto (cuda if available, else cpu) | cpu | cuda


@dataclass
class SampleConfig:
    steps: int = 50                  # DDIM steps (the scaling paper's final depth model: 200)
    spacing: str = "trailing"        # leading | trailing | linspace (trailing reaches t = 999, i.e. pure noise)
    eta: float = 0.0                 # DDIM: deterministic
    clip_x0: float = 1.0             # clip each x0 estimate to [-c, c] (pixel-space images live in [-1, 1]); 0: off
    schedule: str = ""               # test-time noise schedule; "" = the training schedule
    ensemble: int = 1                # test-time ensemble size M (the paper's final depth model: 5)
    ensemble_method: str = "median"  # median | mean | compile (Marigold's median compilation)
    num_images: int = 64             # validation images to evaluate
    batch: int = 16                  # images per sampling batch (x M ensemble members)
    cfg_scale: float = 4.0           # classifier-free guidance scale for class-conditional samples (DiT: 4)
    image_guidance: float = 1.5      # s_I of two-scale guidance for text-conditioned tasks (ADDP: 1.5)
    text_guidance: float = 3.0       # s_D of two-scale guidance (ADDP: 3.0 with x0-prediction)
    seed: int = 0                    # seed of the sampling noise


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
# Value choices checked at load time, so a typo fails before any work starts.
# The lists come from the modules that implement the choices, so a new schedule or method needs no edit here.
_SCHEDULE_NAMES = schedules.SCHEDULES + tuple(schedules.SCHEDULE_ALIASES)  # diffusers' names are accepted too
CHOICES = {
    ("data", "dataset"): tuple(tasks.DATASET_TASKS),
    ("data", "task"): tuple(tasks.TASKS),
    ("diffusion", "schedule"): _SCHEDULE_NAMES,
    ("diffusion", "prediction"): schedules.PREDICTIONS + tuple(schedules.PREDICTION_ALIASES),
    ("train", "mode"): ("pretrain", "finetune"),
    ("train", "lr_schedule"): ("constant", "exp"),
    ("train", "device"): ("auto", "cpu", "cuda"),
    ("sample", "spacing"): ddim.SPACINGS,
    ("sample", "schedule"): ("",) + _SCHEDULE_NAMES,
    ("sample", "ensemble_method"): ensemble.METHODS,
}


# ----------------------------------------------------------------------------------------------------------
# Type checking
# ----------------------------------------------------------------------------------------------------------

def _type_name(tp):
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _check_value(value, tp, where):
    """Return `value` converted to field type `tp`, or raise ConfigError naming `where` and the type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list of {_type_name(item)}, got {value!r}")
        return [_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    # bool is a subclass of int in Python: never accept True for an int/float field, or 1 for a bool field.
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        if isinstance(value, str):
            # YAML 1.1 (PyYAML) reads '3e-5' (no dot) as a string; accept what Python reads as a number.
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - a field type this module does not know is a bug in this file
        raise TypeError(f"unsupported config field type {tp}")
    if not ok:
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    return value


def _closest(name, valid, prefix=""):
    """'; did you mean 'train.lr'?' for the valid name closest to `name` (always some suggestion)."""
    match = difflib.get_close_matches(name, valid, n=1, cutoff=0.0)
    return f"; did you mean '{prefix}{match[0]}'?" if match else ""


# ----------------------------------------------------------------------------------------------------------
# Building a Config from nested dicts
# ----------------------------------------------------------------------------------------------------------

def _apply(config, raw, source):
    """Write the nested dict `raw` ({section: {key: value}}) into `config`, checking every key and type."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    for section, values in raw.items():
        if section not in SECTIONS:
            raise ConfigError(f"{source}: unknown section '{section}'{_closest(str(section), list(SECTIONS))}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section '{section}' must be a mapping, got {type(values).__name__}")
        target = getattr(config, section)
        fields = {f.name: f for f in dataclasses.fields(target)}
        hints = typing.get_type_hints(type(target))
        for key, value in values.items():
            if key not in fields:
                closest = _closest(str(key), list(fields), prefix=f"{section}.")
                raise ConfigError(f"{source}: unknown key '{section}.{key}'{closest}")
            value = _check_value(value, hints[key], f"{source}: {section}.{key}")
            choices = CHOICES.get((section, key))
            if choices is not None and value not in choices:
                raise ConfigError(f"{source}: {section}.{key} = {value!r} is not one of {', '.join(map(repr, choices))}")
            setattr(target, key, value)


def _read_yaml(path, seen):
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{path}: not valid YAML ({first})") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    layers = []
    base = raw.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: 'base' must be a file name, got {base!r}")
        layers += _read_yaml(path.parent / base, seen | {path.resolve()})
    layers.append((raw, str(path)))
    return layers


def parse_override(text):
    """'section.key=value' -> (section, key, value) with value parsed as YAML (so 3e-5 is a float)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"override '{text}': expected section.key=value, e.g. train.lr=3e-5")
    dotted, value_text = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError:
        value = value_text  # not YAML: keep the raw string; type checking decides
    return section, key, value


def apply_overrides(config, overrides):
    """Apply `section.key=value` strings to `config` in place, in order, with the same checks as a file."""
    for text in overrides:
        section, key, value = parse_override(text)
        _apply(config, {section: {key: value}}, f"override '{text}'")
    return config


def load_config(path=None, overrides=()):
    """Resolve a Config: defaults <- base files <- `path` <- each `section.key=value` override, in order."""
    config = Config()
    if path is not None:
        for raw, source in _read_yaml(path, frozenset()):
            _apply(config, raw, source)
    return apply_overrides(config, overrides)


def config_from_dict(raw, source="<dict>"):
    """A Config from the nested dict stored in a checkpoint (same checks as a YAML file)."""
    config = Config()
    _apply(config, raw, source)
    return config


def to_dict(config):
    return dataclasses.asdict(config)


def dump(config, path):
    """Write the resolved config as YAML (every field, so the file alone rebuilds the run)."""
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
