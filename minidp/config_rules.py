"""The rules between fields of a Config (minidp/config.py): checked by config.validate once every file and
override has been applied, so they see the final values.

Each rule is `fn(config) -> message or None`, registered with @cross_rule; the message is one line naming the
keys, their values and what is allowed (config.validate raises it as a ConfigError). A field's own range lives
with the field in config.py; what lives here needs two fields or more (resolution vs the preset's patch,
sample.steps <= T, a task the dataset cannot provide, ...).
"""

from minidp import dit, moe, sampling, schedules, tasks, vae, world

PRESETS = {**dit.DIT_PRESETS, **moe.MOE_PRESETS}  # every model.preset: config.py's known_preset reads it too

CROSS_RULES = []


def cross_rule(fn):
    """Register `fn(config) -> message or None`; the message names the keys, their values and what is allowed."""
    CROSS_RULES.append(fn)
    return fn


@cross_rule
def _resolution_fits_patches(c):
    patch = PRESETS[c.model.preset]["patch_size"]
    down = vae.CODECS[c.data.codec].downsample  # the class's value: no weights are read to validate a config
    if c.data.resolution % (patch * down):
        return (f"data.resolution = {c.data.resolution} must be divisible by {patch * down} (model.preset = "
                f"{c.model.preset!r} has patch size {patch}, x codec downsampling {down})")


@cross_rule
def _data_source_is_complete(c):
    d = c.data
    if d.dataset == "world" and d.num_classes > world.MAX_CLASSES:
        return (f"data.num_classes = {d.num_classes} must be <= {world.MAX_CLASSES} for data.dataset = 'world' "
                "(colour x shape of the largest object)")
    if d.dataset != "world":
        try:
            tasks.check_dataset_task(d.dataset, d.task)  # first: no folder helps a dataset without the task
        except ValueError as e:
            return str(e)
        if not d.root:
            return f"data.dataset = {d.dataset!r} needs data.root, the folder holding it (see configs/real/*.yaml)"
    if d.split_file and d.dataset not in ("hypersim", "flyingchairs"):
        return f"data.split_file is read for hypersim and flyingchairs only, not data.dataset = {d.dataset!r}"
    if d.codec == "sd-vae" and not d.vae_weights:
        # random weights are for the tests and the tutorial, which build codecs in code, never for a run
        return "data.codec = 'sd-vae' needs data.vae_weights (sd-vae-ft-mse's diffusion_pytorch_model.bin)"


@cross_rule
def _micro_batch_divides_global_batch(c):
    if (t := c.train).micro_batch and t.global_batch % t.micro_batch:
        return f"train.global_batch = {t.global_batch} must be divisible by train.micro_batch = {t.micro_batch}"


@cross_rule
def _lr_decays_downwards(c):
    if (t := c.train).lr_schedule == "exp" and t.lr_final > t.lr:
        return f"train.lr_final = {t.lr_final} must be <= train.lr = {t.lr} (train.lr_schedule = 'exp' decays)"


@cross_rule
def _sample_steps_within_T(c):
    if c.sample.steps > c.diffusion.T:
        return f"sample.steps = {c.sample.steps} must be <= diffusion.T = {c.diffusion.T} (distinct timesteps)"


@cross_rule
def _validation_disjoint_from_training(c):
    d = c.data
    if d.val_offset < d.train_size:
        return (f"data.val_offset = {d.val_offset} must be >= data.train_size = {d.train_size}: validation scenes "
                f"{d.val_offset}..{d.val_offset + d.val_size - 1} would overlap training scenes 0..{d.train_size - 1}")
    # class evaluation generates its images; a perception task evaluates on the validation scenes
    if not tasks.get(d.task).pretraining and c.sample.num_images > d.val_size:
        return f"sample.num_images = {c.sample.num_images} must be <= data.val_size = {d.val_size} (task {d.task!r})"


@cross_rule
def _timestep_weights_divide_T(c):
    if (d := c.diffusion).timestep_weights and d.T % len(d.timestep_weights):
        return (f"diffusion.timestep_weights = {d.timestep_weights} has {len(d.timestep_weights)} groups, which "
                f"must divide diffusion.T = {d.T} (ADDP: 10 groups of 100 steps)")


@cross_rule
def _timestep_weights_one_way(c):
    if (d := c.diffusion).timestep_weights and d.timestep_sampling != "uniform":
        return (f"diffusion.timestep_weights = {d.timestep_weights} and diffusion.timestep_sampling = "
                f"{d.timestep_sampling!r} both set c_t^2; keep one (timestep_sampling=uniform with the vector, "
                "timestep_weights=[] with the name)")


@cross_rule
def _augment_needs_x0(c):
    t, d = c.train, c.diffusion
    if t.augment and schedules.canonical_prediction(d.prediction) != "x0":
        return (f"train.augment = {t.augment} needs diffusion.prediction 'x0', not {d.prediction!r}: the noise that "
                "took the augmented target to x_t does not lead back to the clean one (ADDP A.3.2)")
    if t.augment and tasks.get(c.data.task).pretraining:
        return f"train.augment = {t.augment}: augmentation is defined for perception targets, not data.task 'class'"


@cross_rule
def _e2e_fits_the_run(c):
    if c.train.objective != "e2e":
        return None
    if c.train.mode != "finetune":
        return (f"train.objective = 'e2e' fine-tunes one perception task (train.mode = 'finetune'), not "
                f"train.mode = {c.train.mode!r}")
    if c.train.augment:
        return (f"train.augment = {c.train.augment} needs a noised target, which train.objective = 'e2e' does not "
                "have (its input is zeros); set train.augment=0")


@cross_rule
def _zero_noise_has_one_member(c):
    noise = sampling.noise_kind(c)
    if noise == "zeros" and c.sample.ensemble > 1:
        why = "" if c.sample.noise == "zeros" else " (auto: train.objective = 'e2e')"
        return (f"sample.noise = zeros{why} makes every one of sample.ensemble = {c.sample.ensemble} members the same "
                "prediction; set sample.ensemble=1 or sample.noise=gaussian")


@cross_rule
def _correctional_is_for_referring(c):
    s = c.sample
    if s.correctional and not tasks.get(c.data.task).text:
        return f"sample.correctional = {s.correctional!r} needs a text task (referring), not {c.data.task!r}"
    if s.correctional and s.intermediates:
        return ("sample.correctional and sample.intermediates = True together: the per-step metric is recorded "
                "for the plain two-scale chain only; run them separately")


@cross_rule
def _betas_ordered(c):
    d = c.diffusion
    name = schedules.SCHEDULE_ALIASES.get(d.schedule, d.schedule)
    if name in schedules.DEFAULT_BETA_RANGE:  # cosine ignores the betas, as diffusers does
        start, end = (v if v is not None else default for v, default in
                      zip((d.beta_start, d.beta_end), schedules.DEFAULT_BETA_RANGE[name]))
        if start > end:
            return f"diffusion.beta_start = {start} must be <= diffusion.beta_end = {end} (null: {name}'s default)"


@cross_rule
def _eps_needs_terminal_signal(c):
    if (d := c.diffusion).zero_terminal_snr and schedules.canonical_prediction(d.prediction) == "eps":
        return ("diffusion.zero_terminal_snr = True needs diffusion.prediction 'v' or 'x0', not "
                f"{d.prediction!r}: at t = T-1 alpha_bar = 0 and x0 = (x_t - eps) / 0 (Lin et al.)")


@cross_rule
def _mode_fits_task_and_start(c):
    t = c.train
    if t.mode == "pretrain" and not tasks.get(c.data.task).pretraining:
        return f"data.task = {c.data.task!r} needs train.mode = 'finetune' (pre-training is class-conditional)"
    if t.upcycle_from and t.mode == "pretrain":
        return f"train.upcycle_from = {t.upcycle_from!r} needs train.mode = 'finetune' or 'multitask', not 'pretrain'"
    if t.upcycle_from and t.init_from:
        return (f"train.init_from = {t.init_from!r} and train.upcycle_from = {t.upcycle_from!r} are both set; "
                "upcycling starts from upcycle_from: set train.init_from=")


@cross_rule
def _multitask_has_tasks(c):
    t, d = c.train, c.data
    per_task = {"data.tasks": d.tasks, "diffusion.task_timestep_weights": c.diffusion.task_timestep_weights,
                "train.task_loss": t.task_loss}
    if t.mode != "multitask":
        for key, value in per_task.items():
            if value:
                return f"{key} = {value} is for train.mode = 'multitask', not {t.mode!r}"
        return None
    if not d.tasks:
        return "train.mode = 'multitask' needs data.tasks, e.g. {depth: 1, flow: 1, amodal: 1, referring: 1}"
    for key, value in per_task.items():
        extra = [k for k in value if k not in d.tasks]
        if extra:
            return f"{key} names task {extra[0]!r}, which data.tasks = {d.tasks} does not train"
    for task in d.tasks:
        if d.dataset not in tasks.get(task).datasets:
            return f"data.dataset = {d.dataset!r} cannot provide task {task!r} of data.tasks"
    for w in c.diffusion.task_timestep_weights.values():
        if c.diffusion.T % len(w):
            return f"diffusion.task_timestep_weights: {len(w)} groups must divide diffusion.T = {c.diffusion.T}"
    # ADDP's per-run pieces read one task (augmentation kind, one c_t vector, one intermediates table)
    for key, value in (("train.augment", t.augment), ("sample.intermediates", c.sample.intermediates)):
        if value:
            return f"{key} = {value} is not supported with train.mode = 'multitask' (it is defined per task)"
    if c.diffusion.ct_usage == "loss":
        return "diffusion.ct_usage = 'loss' is not supported with train.mode = 'multitask'; use 'prob'"


@cross_rule
def _upcycle_shape(c):
    m, depth = c.model, PRESETS[c.model.preset]["depth"]
    if m.upcycle_top_k > m.upcycle_experts:
        return f"model.upcycle_top_k = {m.upcycle_top_k} must be <= model.upcycle_experts = {m.upcycle_experts}"
    if m.upcycle_every > depth:
        return f"model.upcycle_every = {m.upcycle_every} must be <= {depth}, the depth of model.preset = {m.preset!r}"
