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
- Each field declares its valid values where it is declared (`steps: int = positive(1000)`), so a new key and
  its rule are one line. Every value path (file, override, checkpoint dict) checks the rule as it is written;
  the rules between fields (resolution vs the preset's patch, sample.steps <= T, ...; minidp/config_rules.py)
  run in `validate`, once the config is final: load_config calls it last, sample.py after its own overrides.
- warmup_steps >= steps is allowed: a smoke run of a YAML (`train.steps=3` on depth.yaml's 100-step warm-up)
  is common and lr_at simply never leaves the ramp; making it an error would make every such run say
  train.warmup_steps=0 too.
"""

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from minidp import config_rules, ct_estimation, ddim, ensemble, schedules, tasks, vae


class ConfigError(ValueError):
    """A bad config file, key, value or override; the message is one line that says what to fix."""


# ----------------------------------------------------------------------------------------------------------
# Rules: what each field allows, declared with the field
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """A field's valid values: `test(value) -> bool` on a type-checked value, and the phrase `allowed`."""
    test: typing.Callable[[typing.Any], bool]
    allowed: str
    hint: typing.Callable[[typing.Any], str] | None = None  # extra text for a bad value (a closest name)


def ruled(default, allowed, test, hint=None):
    """A dataclass field with default `default` (a list is copied per instance) and its Rule in the metadata."""
    rule = {"rule": Rule(test, allowed, hint)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=rule)
    return field(default=default, metadata=rule)


def positive(default):
    """An integer >= 1, or a finite float > 0 (the default's type decides which)."""
    if isinstance(default, int):
        return ruled(default, "an integer >= 1", lambda v: v >= 1)
    return ruled(default, "a finite number > 0", lambda v: math.isfinite(v) and v > 0)


def non_negative(default):
    return ruled(default, "a finite number >= 0" if isinstance(default, float) else "an integer >= 0",
                 lambda v: math.isfinite(v) and v >= 0)


def between(default, lo, hi):
    allowed = f"an integer in {lo}..{hi}" if isinstance(default, int) else f"a number in [{lo}, {hi}]"
    return ruled(default, allowed, lambda v: lo <= v <= hi)  # nan fails every comparison


def probability(default):
    return ruled(default, "a probability in [0, 1]", lambda v: 0 <= v <= 1)


def one_of(default, choices):
    """One of `choices`, read when checked, so a module that adds a choice (a task, a schedule) needs no edit here."""
    return ruled(default, "one of the choices", lambda v: v in choices,
                 hint=lambda v: f"is not one of {', '.join(map(repr, choices))}")


def non_empty(default):
    return ruled(default, "a non-empty string", lambda v: v.strip() != "")


def beta():
    return ruled(None, "null or a number in (0, 1)", lambda v: v is None or 0 < v < 1)


def weights():
    """Sampling weights: finite, >= 0 and not all zero; [] (the default) means uniform."""
    return ruled([], "a list of finite weights >= 0, not all 0 ([] = uniform)",
                 lambda w: all(math.isfinite(x) and x >= 0 for x in w) and (not w or sum(w) > 0))


def timestep_sampling():
    """uniform | diffusion | a ct_estimation preset | perception:<weights.json> (a typo gets the closest choice)."""
    def test(v):
        return v in TIMESTEP_SAMPLINGS or (v.startswith("perception:") and v[len("perception:"):].strip() != "")
    return ruled("uniform", "a timestep sampling", test,
                 hint=lambda v: f"is not one of {', '.join(TIMESTEP_SAMPLINGS)} or perception:<weights.json>"
                                f"{_closest(v, list(TIMESTEP_SAMPLINGS) + ['perception:'])}")


def correctional():
    """"" (off), "auto" or an expression in the world's vocabulary (tokenized when checked)."""
    def test(v):
        try:
            return v in ("", "auto") or (tasks.tokenize([v]) is not None and v.strip() != "")
        except ValueError:
            return False
    return ruled("", '"", "auto" or an expression of the world\'s words, e.g. "the blue box"', test)
def task_map(item_rule, allowed):
    """A mapping {perception task: value} ({} = unused), each value passing item_rule; a bad task is named with
    the closest valid one."""
    perception = [name for name, task in tasks.TASKS.items() if not task.pretraining]

    def hint(v):
        bad = [k for k in v if k not in perception]
        if bad:
            return f"must be keyed by perception tasks; {bad[0]!r} is not one{_closest(str(bad[0]), perception)}"
        return f"must be a mapping of tasks to {allowed}"
    return field(default_factory=dict, metadata={"rule": Rule(
        lambda v: all(k in perception and item_rule(x) for k, x in v.items()), allowed, hint)})


def known_preset(default):
    """A preset name; a typo is answered with the closest preset (PRESETS is defined below, read when checked)."""
    return ruled(default, "a preset name", lambda v: v in PRESETS,
                 hint=lambda v: f"is not a preset of dit.DiT_models or moe.DiTMoE_models{_closest(v, list(PRESETS))}")


# ----------------------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------------------

# Presets by name, with their architecture dicts (patch_size is read from them by the cross-field rules).
PRESETS = config_rules.PRESETS
_SCHEDULE_NAMES = schedules.SCHEDULES + tuple(schedules.SCHEDULE_ALIASES)  # diffusers' names are accepted too
_ENSEMBLE_METHODS = ensemble.METHODS  # SampleConfig.ensemble (a field) hides the module there
_PREDICTIONS = schedules.PREDICTIONS + tuple(schedules.PREDICTION_ALIASES)
TIMESTEP_SAMPLINGS = ("uniform", "diffusion") + tuple(ct_estimation.PRESETS)  # + perception:<weights.json>
WORLD_RESOLUTIONS = (16, 256)  # world.render's range (world._check_resolution); a real dataset would set its own


@dataclass
class ModelConfig:
    preset: str = known_preset("tiny")  # a name from dit.DiT_models or moe.DiTMoE_models ("DiT-S/2", "a1", "tiny")
    learn_sigma: bool = False        # DiT's learned variance; DDIM ignores it, so minidp trains without it
    class_dropout_prob: float = probability(0.1)  # DiT: labels dropped with p = 0.1 for classifier-free guidance
    balance_alpha: float = non_negative(0.01)  # DiT-MoE's balance-loss weight (MoE presets, upcycled models; 0: off)
    upcycle_experts: int = positive(8)  # E when train.upcycle_from turns a dense checkpoint into an MoE (paper §4.4)
    upcycle_top_k: int = positive(2)  # k; the routers renormalise top-k weights, so training starts from the dense model
    upcycle_every: int = positive(1)  # 1: every block's MLP becomes an MoE layer; 2: every other block


@dataclass
class DataConfig:
    dataset: str = one_of("world", tasks.DATASETS)  # "world": the synthetic world; the real ones: minidp/readers.py
    task: str = one_of("class", tasks.TASKS)  # class (pre-training) | depth | flow | amodal | referring | normals
    resolution: int = between(32, *WORLD_RESOLUTIONS)  # square image size in pixels (the world renders 16..256)
    num_classes: int = positive(10)  # K classes: the world's (colour x shape, <= world.MAX_CLASSES) or the class folders'
    seed: int = non_negative(0)      # world seed: scene i of the dataset is world.render([i], seed=seed)
    train_size: int = positive(4096)  # training scenes are indices 0..train_size-1 (rendered once, ~17 KB each at 32 px)
    val_size: int = positive(1024)   # validation scenes are indices val_offset..val_offset+val_size-1; 1024: an
                                     # AbsRel interval of +-0.003 (64 scenes: +-0.012, wider than most differences)
    val_offset: int = non_negative(10_000_000)  # far from the training indices: validation scenes are never trained on
    root: str = ""                   # a real dataset's folder (its published layout, minidp/readers.py); "" for the world
    codec: str = one_of("pixel", tuple(vae.CODECS))  # pixel (identity) | sd-vae (4 x R/8 x R/8 latents, minidp/vae.py)
    vae_weights: str = ""            # sd-vae: a diffusers AutoencoderKL file (sd-vae-ft-mse's diffusion_pytorch_model.bin)
    workers: int = non_negative(4)   # DataLoader worker processes per rank for a real dataset (0: load in the loop)
    latent_cache: str = ""           # folder of `python -m minidp.data cache`'s latents; "" = <train.out_dir>/latents
    split_file: str = ""             # Hypersim: Marigold's filtered training list; FlyingChairs: its split file ("" = in root)
    amodal_white: float = between(1.5, 1.0, 10.0)  # amodal's target background: 1.0 white; beyond it, DDIM's x0 clipping
                                     # makes it exactly white (minidp/tasks/masks.py says why 1.5)
    tasks: dict[str, float] = task_map(  # multitask: tasks and mixture weights, {depth: 4, flow: 2.5}; data.task unused
        lambda w: math.isfinite(w) and w > 0, "weights > 0")


@dataclass
class DiffusionConfig:
    schedule: str = one_of("linear", _SCHEDULE_NAMES)  # linear | scaled_linear | cosine (REFERENCE.md §1)
    beta_start: float | None = beta()  # None = the schedule's paper default (1e-4 linear, 0.00085 scaled_linear)
    beta_end: float | None = beta()  # None = the schedule's paper default (0.02 linear, 0.012 scaled_linear)
    T: int = ruled(1000, "an integer >= 2", lambda v: v >= 2)  # training timesteps
    zero_terminal_snr: bool = False  # Lin et al.'s rescale of the schedule
    prediction: str = one_of("eps", _PREDICTIONS)  # eps (DiT) | v (Marigold) | x0 (ADDP with augmentation)
    # c_t^2 of ADDP's t ~ Multinomial(c_t^2) (Algorithm B): uniform | diffusion (the formula on this schedule) |
    # depth_release | ris_release (the release's vectors) | depth_quick (minidp's, ct_estimation.PRESETS) |
    # perception:<weights.json> (python -m minidp.ct_estimation)
    timestep_sampling: str = timestep_sampling()  # read once at start-up (recipe.timestep_weights)
    ct_usage: str = one_of("prob", ("prob", "loss"))  # prob: sample t by c_t^2 | loss: uniform t, loss x c_t^2 (mean 1)
    timestep_weights: list[float] = weights()  # an explicit c_t^2 per group of T/G steps instead ([] = use the above)
    task_timestep_weights: dict[str, list[float]] = task_map(  # multitask: {flow: [...]}; others: the above
        lambda w: all(math.isfinite(x) and x >= 0 for x in w) and sum(w) > 0, "lists of weights >= 0, not all 0")


@dataclass
class TrainConfig:
    mode: str = one_of("pretrain", ("pretrain", "finetune", "multitask"))  # pretrain (class) | finetune | multitask
    out_dir: str = non_empty("runs/pretrain")  # config.yaml, log.jsonl, ckpt.pt, eval.json, figures/ land here
    init_from: str = ""              # checkpoint to fine-tune from ("" = from scratch)
    init_optional: bool = False      # True: a missing init_from is not an error; train from scratch and say so
    upcycle_from: str = ""           # a dense checkpoint to upcycle into an MoE and continue fine-tuning ("" = none)
    steps: int = positive(1000)      # optimiser steps
    global_batch: int = positive(256)  # DiT: 256 over all ranks and accumulation micro-steps
    micro_batch: int = non_negative(0)  # per-rank batch of one forward; 0 = global_batch / world_size (no accumulation)
    lr: float = positive(1e-4)       # DiT: AdamW 1e-4
    lr_schedule: str = one_of("constant", ("constant", "exp"))  # constant (DiT) | exp (Marigold: decay to lr_final)
    lr_final: float = positive(1e-6)  # exp schedule's last value (the scaling paper: 3e-5 -> 3e-7)
    warmup_steps: int = non_negative(0)  # linear warm-up (Marigold: 100)
    weight_decay: float = non_negative(0.0)  # DiT: 0
    loss: str = one_of("mse", ("mse", "l1"))  # mse (DiT, Marigold) | l1 (median, not mean: crisp masks; recipe.py)
    task_loss: dict[str, str] = task_map(lambda v: v in ("mse", "l1"), "mse or l1")  # multitask: {amodal: l1}
    grad_clip: float = non_negative(1.0)  # max global grad norm, 0: off (DiT does not clip; tiny runs are steadier)
    ema_decay: float = probability(0.9999)  # DiT: 0.9999; short runs need less (configs say why)
    seed: int = non_negative(0)      # seeds the initial weights and every step's batch plan (minidp/recipe.py)
    cond_drop_prob: float = between(0.05, 0, 1 / 3)  # text tasks: drop text, image, both, with p each (InstructPix2Pix)
    log_every: int = positive(50)    # steps between log lines / JSONL records
    ckpt_every: int = positive(500)  # steps between checkpoints (one is always written at the end)
    eval_every: int = non_negative(0)  # steps between evaluations (0 = only at the end)
    device: str = one_of("auto", ("auto", "cpu", "cuda"))  # auto (cuda if available, else cpu) | cpu | cuda
    parallel: str = one_of("ddp", ("ddp", "fsdp"))  # under torchrun: ddp (replicas) | fsdp (shards; minidp/parallel.py)
    rank_timeout_s: int = positive(1800)  # a collective waits this long for a rank that hangs, then the run stops
    #                                   (one line, exit 3); longer than rank 0's evaluation, which the others wait for
    compile: bool = False            # torch.compile the model (issue 14, CPU: +7 % for ~40 s of compiling; so off)
    checkpoint_activations: bool = False  # recompute each block in backward: less memory, a larger micro-batch
    augment: float = between(0.0, 0.0, 2.0)  # ADDP's target augmentation intensity (0 off, 0.5, 1, 2; x0 only)
    objective: str = one_of("diffusion", ("diffusion", "e2e"))  # diffusion | e2e (E2E-FT: t = T - 1, zeros for
    #                                   x_t, the task's own loss after decoding; minidp/recipe.py)


@dataclass
class SampleConfig:
    steps: int = positive(50)        # DDIM steps (the scaling paper's final depth model: 200)
    spacing: str = one_of("trailing", ddim.SPACINGS)  # leading | trailing | linspace (trailing starts at t = 999)
    eta: float = between(0.0, 0, 1)  # DDIM: deterministic (0); 1 = DDPM's ancestral noise
    clip_x0: float = non_negative(1.0)  # clip each x0 estimate to [-c, c] (pixel-space images live in [-1, 1]); 0: off.
    #                                   The pixel codec only: SD latents are unbounded, and Marigold does not clip them
    schedule: str = one_of("", ("",) + _SCHEDULE_NAMES)  # test-time noise schedule; "" = the training schedule
    ensemble: int = positive(1)      # test-time ensemble size M (the paper's final depth model: 5)
    ensemble_method: str = one_of("median", _ENSEMBLE_METHODS)  # median | mean | compile (Marigold's compilation)
    num_images: int = positive(1024)  # validation images to evaluate (all 1024 validation scenes)
    batch: int = positive(16)        # images per sampling batch (x M ensemble members)
    cfg_scale: float = non_negative(4.0)  # classifier-free guidance scale for class-conditional samples (DiT: 4)
    image_guidance: float = non_negative(1.5)  # s_I of two-scale guidance for text-conditioned tasks (ADDP: 1.5)
    text_guidance: float = non_negative(3.0)  # s_D of two-scale guidance (ADDP: 3.0 with x0-prediction)
    seed: int = non_negative(0)      # seed of the sampling noise
    noise: str = one_of("auto", ("auto", "gaussian", "zeros"))  # x_T: gaussian | zeros (deterministic: one member);
    #                                   auto = zeros for a train.objective e2e run, gaussian otherwise
    correctional: str = correctional()  # referring: ADDP's correctional prompt D- ("auto": the scene's other objects)
    correctional_guidance: float = non_negative(2.0)  # w_D- of correctional guidance (ADDP: 2.0; w_I, w_D as above)
    correctional_prompts: int = positive(3)  # auto: k prompts, then a pixel-wise majority vote (ADDP: k = 3)
    intermediates: bool = False      # also write intermediates.json: every sample's metric at every DDIM step
    task: str = one_of("", ("",) + tuple(tasks.TASKS))  # evaluate only this task of a generalist ("" = all it knows)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}


# ----------------------------------------------------------------------------------------------------------
# Type checking
# ----------------------------------------------------------------------------------------------------------

def _type_name(tp):
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def _check_value(value, tp, where):
    """Return `value` converted to field type `tp`, or raise ConfigError naming `where` and the type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in [a for a in args if a is not type(None)]:
            try:
                return _check_value(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if origin is dict:
        key_type, item = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {_type_name(key_type)} to {_type_name(item)}, "
                              f"got {value!r}")
        return {_check_value(k, key_type, f"{where} key {k!r}"): _check_value(v, item, f"{where}.{k}")
                for k, v in value.items()}
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list of {_type_name(item)}, got {value!r}")
        return [_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp not in (bool, int, float, str):  # pragma: no cover - a field type this module does not know is a bug here
        raise TypeError(f"unsupported config field type {tp}")
    if tp is float and isinstance(value, str):
        # YAML 1.1 (PyYAML) reads '3e-5' (no dot) as a string; accept what Python reads as a number.
        try:
            value = float(value)
        except ValueError:
            pass
    allowed = (int, float) if tp is float else tp  # an int is a valid float, converted below
    # bool is a subclass of int in Python: never accept True for an int/float field, or 1 for a bool field.
    if not isinstance(value, allowed) or (isinstance(value, bool) and tp is not bool):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    return float(value) if tp is float else value


def _check_rule(f, value, where):
    """Raise ConfigError if `value` breaks the Rule declared with field `f`: the key, the value, what is allowed."""
    rule = f.metadata.get("rule")
    if rule is not None and not rule.test(value):
        says = rule.hint(value) if rule.hint else f"must be {rule.allowed}"
        raise ConfigError(f"{where} = {value!r} {says}")


def _closest(name, valid, prefix=""):
    """'; did you mean 'train.lr'?' for the valid name closest to `name` (always some suggestion)."""
    match = difflib.get_close_matches(name, valid, n=1, cutoff=0.0)
    return f"; did you mean '{prefix}{match[0]}'?" if match else ""


# ----------------------------------------------------------------------------------------------------------
# Building a Config from nested dicts
# ----------------------------------------------------------------------------------------------------------

def _apply(config, raw, source):
    """Write the nested dict `raw` ({section: {key: value}}) into `config`, checking every key and type; return it."""
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
            where = f"{source}: {section}.{key}"
            value = _check_value(value, hints[key], where)
            _check_rule(fields[key], value, where)
            setattr(target, key, value)
    return config


def read_mapping(path, what="config file"):
    """A YAML file's top-level mapping (yaml.safe_load: no tags, no code), or a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{path}: not valid YAML ({first})") from None
    except (OSError, UnicodeDecodeError) as e:  # a file this user may not read, or not text at all
        raise ConfigError(f"{path}: cannot read it ({getattr(e, 'strerror', None) or type(e).__name__})") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping, got {type(raw).__name__}")
    return raw


def _read_yaml(path, seen):
    path = Path(path)
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    raw = read_mapping(path)
    layers = []
    base = raw.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: 'base' must be a file name, got {base!r}")
        layers = _read_yaml(path.parent / base, seen | {path.resolve()})
    return layers + [(raw, str(path))]


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


def validate(config):
    """Check every field's rule (also for values set in code) and then every cross-field rule; return config.

    load_config calls it last; a script that edits a config afterwards (sample.py: config_from_dict, then
    apply_overrides) calls it again once the config is final."""
    _apply(Config(), to_dict(config), "config")  # every field through a file's checks, into a scratch copy
    for rule in config_rules.CROSS_RULES:
        problem = rule(config)
        if problem:
            raise ConfigError(problem)
    return config


def load_config(path=None, overrides=()):
    """Resolve a Config: defaults <- base files <- `path` <- each `section.key=value` override, in order."""
    config = Config()
    if path is not None:
        for raw, source in _read_yaml(path, frozenset()):
            _apply(config, raw, source)
    return validate(apply_overrides(config, overrides))


def config_from_dict(raw, source="<dict>"):
    """A Config from the nested dict stored in a checkpoint (the same per-field checks as a YAML file).

    The cross-field rules are left to `validate`, for the caller to run after its overrides."""
    return _apply(Config(), raw, source)


def to_dict(config):
    return dataclasses.asdict(config)


def dump(config, path):
    """Write the resolved config as YAML (every field, so the file alone rebuilds the run)."""
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
