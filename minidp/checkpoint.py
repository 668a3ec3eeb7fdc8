"""Checkpoints: atomic save, weights_only load, and the model a run starts from or a checkpoint describes.

A minidp checkpoint is one dict (DESIGN.md): {"model", "ema", "opt", "step", "config", "model_config", "tasks",
"rng", "format"}. The state dicts keep DiT's key names, so a released DiT checkpoint's weights load into the same model;
`model_config` holds every constructor argument, so `architecture(model_config)` rebuilds a dense or MoE model
with no other information.

Notable choices:
- `torch.load(..., weights_only=True)` always: a checkpoint is data, never code. A pickle that would run code is
  refused, and the refusal is one line naming the file (torch's own message spans several).
- A path naming a run directory means that run's ckpt.pt, wherever a checkpoint is accepted.
- Writes go through files.atomic_write (temporary file, fsync, rename, fsync of the directory), so a crash, a
  SIGKILL or a full disk mid-write leaves the previous checkpoint intact; a failed write is one line, exit status 3.
- Every checkpoint records its layout's `format`; one from a newer minidp is refused in one line, not misread.
- Every failure a user can fix is an `InputError` (minidp/errors.py): one line naming the file.
- One training process per run directory: `lock_run` takes an exclusive `flock` on `<run>/.lock`. The kernel
  drops the lock when its process ends, however it ends (SIGKILL, a crash, a power cut of the node), so a dead
  run never leaves a stale lock behind; the file itself stays and only records who held it last.
"""

import warnings
from pathlib import Path

import torch

from minidp import config, dit, files, moe, tasks, upcycle, vae
from minidp.errors import InputError, one_line

FORMAT = 1  # the checkpoint layout above; saved in every checkpoint as "format", bumped when the layout changes

# ----------------------------------------------------------------------------------------------------------
# Reading and writing
# ----------------------------------------------------------------------------------------------------------

def resolve(path):
    """A checkpoint path: a run directory stands for its ckpt.pt."""
    path = Path(path)
    return path / "ckpt.pt" if path.is_dir() else path


def load_checkpoint(path, what):
    """torch.load with weights_only=True, turning every failure into one line naming the file."""
    path = resolve(path)
    if not path.is_file():
        raise InputError(f"{what}: checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about a raw pickle's protocol before refusing it
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file, another format, a pickle with code in it, an unreadable file
        # torch puts the cause after its advice on loading the file unsafely: keep the cause only
        reason = str(e).split("WeightsUnpickler error:", 1)[-1]
        raise InputError(f"{what}: {path} is not a readable minidp/DiT checkpoint ({one_line(reason)})") from None
    if not isinstance(ckpt, dict):
        raise InputError(f"{what}: {path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    version = ckpt.get("format", 1)  # checkpoints from before the field existed are format 1
    if not isinstance(version, int) or version > FORMAT:
        raise InputError(f"{what}: {path} is in checkpoint format {version!r}, newer than this minidp reads "
                         f"(up to {FORMAT}); update minidp to load it")
    return ckpt


def training_state(model_state, ema_state, opt_state, step, cfg, model, rng):
    """The checkpoint dict of a training run (DESIGN.md's format): full state dicts of the model, its EMA and the
    optimiser, the step, the resolved config, the model's constructor arguments, the run's task names, the RNG."""
    return {"model": model_state, "ema": ema_state, "opt": opt_state, "step": step, "config": config.to_dict(cfg),
            "model_config": dict(model.config), "tasks": [task.name for task in tasks.run_tasks(cfg)], "rng": rng}


def save_checkpoint(path, state):
    """files.atomic_write: a crash or a failed write (FaultError, one line) leaves the previous checkpoint intact."""
    files.atomic_write(path, lambda f: torch.save({**state, "format": FORMAT}, f))


def architecture(model_config):
    """An untrained model of the architecture a checkpoint's `model_config` describes (dense DiT or MoE DiT)."""
    return moe.DiTMoE(**model_config) if "num_experts" in model_config else dit.DiT(**model_config)


class CheckpointMismatchError(ValueError):
    """A state dict whose keys or shapes do not match the model's architecture."""


def load_dit_state_dict(model, state_dict):
    """Strict load of a DiT (or DiT-MoE) state dict; on mismatch raise CheckpointMismatchError listing what differs.

    torch's own strict error is accurate but long; this one names the first few missing keys, unexpected
    keys and shape mismatches in one message, which is usually enough to see which preset was meant.
    """
    if "model" in state_dict and "ema" in state_dict:
        raise ValueError("this looks like a training checkpoint {'model', 'ema', ...}: pass ckpt['ema'] or ckpt['model']")
    missing, unexpected, shapes = vae.key_diff(model.state_dict(), state_dict)
    shapes = [f"{k}: checkpoint {got} vs model {want}" for k, got, want in shapes]
    if missing or unexpected or shapes:
        lines = [f"state dict does not match this {type(model).__name__} (config {getattr(model, 'config', {})}):"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                lines.append(f"  {len(items)} {title}: " + ", ".join(items[:5]) + more)
        raise CheckpointMismatchError("\n".join(lines))
    model.load_state_dict(state_dict, strict=True)
    return model


def model_from_checkpoint(ckpt, path, weights="ema"):
    """Rebuild the model a minidp checkpoint describes and load its `weights` ("ema" or "model")."""
    if "model_config" not in ckpt or weights not in ckpt:
        keys = ", ".join(list(ckpt)[:5])
        raise InputError(f"{path}: not a minidp training checkpoint (no 'model_config'/'{weights}'; keys: {keys})")
    try:
        model = architecture(ckpt["model_config"])
        load_dit_state_dict(model, ckpt[weights])
    except CheckpointMismatchError as e:  # minidp's own summary: every line of it counts
        raise InputError(f"{path}: {' '.join(str(e).split())}") from None
    except (TypeError, ValueError, RuntimeError) as e:
        raise InputError(f"{path}: {one_line(e)}") from None
    return model


RESUME_KEYS = (("model", "preset"), ("data", "task"), ("data", "tasks"), ("data", "resolution"), ("data", "codec"),
               ("train", "mode"))  # what a resumed run may not change: the model's shape and what it learns


def resume_model(ckpt_path, cfg):
    """(checkpoint dict, model with its training weights) of the run at ckpt_path; InputError (one line) if cfg
    changes one of RESUME_KEYS."""
    ckpt = load_checkpoint(ckpt_path, "resume")
    saved = ckpt.get("config", {})
    for section, key in RESUME_KEYS:
        default = getattr(type(getattr(cfg, section))(), key)  # a key newer than the checkpoint: its default
        was, now = saved.get(section, {}).get(key, default), getattr(getattr(cfg, section), key)
        if was != now:
            raise InputError(f"{ckpt_path} was trained with {section}.{key} = {was!r} but the config says {now!r}; "
                             "choose another train.out_dir or delete the old run")
    return ckpt, model_from_checkpoint(ckpt, ckpt_path, weights="model")


def check_writable(out_dir):
    """Create out_dir and prove a file can be written there; InputError (one line) if not."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write_probe"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise InputError(f"train.out_dir: cannot write to {out_dir} ({e.strerror or one_line(e)})") from None


def checkpoint_tasks(ckpt, path, task):
    """The tasks a checkpoint was trained on; InputError if `task` (None: any) is not among them."""
    known = list(ckpt.get("tasks") or [ckpt.get("config", {}).get("data", {}).get("task")])
    if task is not None and task not in known:
        how = f"sample.task={known[0]}" if len(known) > 1 else f"data.task={known[0]}"
        raise InputError(f"{path} was trained on {', '.join(map(str, known))}, not {task!r}; evaluate it with {how}")
    return known


def lock_run(out_dir):
    """Take `out_dir`'s run lock for this process (keep the returned file open while training), or raise
    InputError naming the process that holds it (files.lock_folder)."""
    return files.lock_folder(out_dir, "train.py", label=f"train.out_dir: {out_dir}",
                             advice="wait for it or choose another train.out_dir")


# ----------------------------------------------------------------------------------------------------------
# The model a run starts from
# ----------------------------------------------------------------------------------------------------------

def new_model(cfg, codec):
    """A freshly initialised class-conditional DiT (or DiT-MoE, for an MoE preset) for this config's data."""
    kwargs = dict(input_size=cfg.data.resolution // codec.downsample, in_channels=codec.channels,
                  num_classes=cfg.data.num_classes, learn_sigma=cfg.model.learn_sigma,
                  class_dropout_prob=cfg.model.class_dropout_prob)
    if cfg.model.preset in moe.DiTMoE_models:
        return moe.build_moe(cfg.model.preset, balance_alpha=cfg.model.balance_alpha, **kwargs)
    if cfg.model.preset not in dit.DiT_models:
        raise InputError(f"model.preset: unknown preset {cfg.model.preset!r}; valid: "
                         f"{', '.join(list(dit.DiT_models) + list(moe.DiTMoE_models))}")
    return dit.build_dit(cfg.model.preset, **kwargs)


def for_task(model, cfg, codec):
    """Marigold's conversion of a class-conditional model: widen the input for the condition images, give each of
    the run's tasks (tasks.run_tasks) its label row and patch embedding, and the text path for referring.

    A generalist takes as many groups as its widest task (the release: three, RGB, a second condition image or a
    blank one, and the target); a single-task checkpoint joins one by add_condition_groups + add_tasks (every task
    starts from that model's function). A model already converted for these tasks is kept."""
    run = tasks.run_tasks(cfg)
    names = [task.name for task in run]
    groups = max(task.cond_images for task in run) + 1
    expected_size = cfg.data.resolution // codec.downsample
    if model.input_size != expected_size or model.in_channels != codec.channels:
        raise InputError(f"the checkpoint's model takes {model.in_channels}x{model.input_size}x{model.input_size} "
                         f"inputs, this config needs {codec.channels}x{expected_size}x{expected_size}")
    if model.num_tasks == 0:
        model = dit.make_multitask(dit.widen_input(model, groups), len(names))
    elif model.num_tasks == 1 and len(names) > 1 and 2 <= model.in_groups <= groups:
        model = dit.add_tasks(dit.add_condition_groups(model, groups), len(names))
    elif model.in_groups != groups or model.num_tasks != len(names):
        raise InputError(f"the checkpoint's model takes {model.in_groups} input groups and has {model.num_tasks} "
                         f"task(s); {', '.join(names)} need(s) {groups} groups and {len(names)} task(s)")
    if any(task.text for task in run) and not model.config.get("vocab_size"):
        model = dit.add_text(model, len(tasks.VOCAB))  # zero-initialised: the same function as before
    return model


def initial_model(cfg, codec):
    """The model a new run starts from, and one line saying where it came from."""
    tc = cfg.train
    if tc.mode == "pretrain":
        if tc.init_from:
            ckpt = load_checkpoint(tc.init_from, "train.init_from")
            return model_from_checkpoint(ckpt, tc.init_from), f"continuing from {tc.init_from}"
        return new_model(cfg, codec), f"pre-training {cfg.model.preset} from scratch"

    if tc.upcycle_from:  # the scaling paper's §4.4: upcycle a fine-tuned dense model, continue fine-tuning
        ckpt = load_checkpoint(tc.upcycle_from, "train.upcycle_from")
        dense = for_task(model_from_checkpoint(ckpt, tc.upcycle_from), cfg, codec)
        m = cfg.model
        try:
            model = upcycle.upcycle(dense, m.upcycle_experts, m.upcycle_top_k, every=m.upcycle_every,
                                    generator=torch.Generator().manual_seed(tc.seed), balance_alpha=m.balance_alpha)
        except ValueError as e:
            raise InputError(f"train.upcycle_from: {tc.upcycle_from}: {e}") from None
        return model, (f"upcycling {tc.upcycle_from} (its step {ckpt.get('step', '?')}) to {m.upcycle_experts} "
                       f"experts, top-{m.upcycle_top_k}, every {m.upcycle_every} block(s)")

    # init_optional forgives only a path that does not exist at all (a quickstart run before its pre-training)
    if tc.init_from and (Path(tc.init_from).exists() or not tc.init_optional):
        ckpt = load_checkpoint(tc.init_from, "train.init_from")
        if "model_config" not in ckpt and "pos_embed" in ckpt:  # a released DiT file (DiT-XL-2-256x256.pt): bare weights
            model = new_model(cfg, codec)  # model.preset, learn_sigma and num_classes must say which DiT it is
            try:
                load_dit_state_dict(model, ckpt)
            except CheckpointMismatchError as e:
                raise InputError(f"train.init_from: {tc.init_from}: {' '.join(str(e).split())}") from None
            return for_task(model, cfg, codec), f"fine-tuning the released {cfg.model.preset} weights {tc.init_from}"
        model = model_from_checkpoint(ckpt, tc.init_from)
        source = f"fine-tuning from {tc.init_from} (its step {ckpt.get('step', '?')})"
    else:
        model = new_model(cfg, codec)
        missing = f" ({tc.init_from} not found, init_optional: true)" if tc.init_from else ""
        source = f"fine-tuning {cfg.model.preset} from scratch{missing}"
    return for_task(model, cfg, codec), source
