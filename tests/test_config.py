"""Config loading: YAML + base inheritance + typed overrides, every field's valid range, and one-line errors for
every mistake (each naming the key and the value). The cross-field rules: tests/test_config_rules.py.

Run: pytest -q tests/test_config.py
"""

import dataclasses
from pathlib import Path

import pytest

from minidp import config as cfglib
from minidp import tasks
from minidp.config import Config, ConfigError, config_from_dict, dump, load_config, to_dict, validate

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def write(path, text):
    path.write_text(text)
    return path


def test_defaults_are_the_papers_values():
    c = Config()
    # DiT's recipe: AdamW 1e-4, no weight decay, batch 256, EMA 0.9999, T = 1000, linear betas.
    assert (c.train.lr, c.train.weight_decay, c.train.global_batch, c.train.ema_decay) == (1e-4, 0.0, 256, 0.9999)
    assert (c.diffusion.T, c.diffusion.schedule, c.diffusion.prediction) == (1000, "linear", "eps")


def test_round_trip_load_dump_load_is_identity(tmp_path):
    src = write(tmp_path / "a.yaml", "train:\n  mode: finetune\n  lr: 3e-5\n  steps: 7\ndata:\n  task: depth\n")
    c1 = load_config(src, ["sample.steps=9", "diffusion.beta_start=0.001"])
    dump(c1, tmp_path / "resolved.yaml")
    c2 = load_config(tmp_path / "resolved.yaml")
    assert c1 == c2
    assert config_from_dict(to_dict(c1)) == c1
    # and the values really came through (the round trip of an all-default config would prove little)
    assert (c2.train.lr, c2.train.steps, c2.data.task, c2.sample.steps, c2.diffusion.beta_start) == (
        3e-5, 7, "depth", 9, 0.001)


def test_base_inheritance_then_file_then_overrides(tmp_path):
    write(tmp_path / "base.yaml", "train:\n  lr: 0.5\n  steps: 3\nsample:\n  steps: 4\n")
    child = write(tmp_path / "child.yaml", "base: base.yaml\ntrain:\n  steps: 5\n")
    c = load_config(child, ["sample.steps=6"])
    assert (c.train.lr, c.train.steps, c.sample.steps) == (0.5, 5, 6)


def test_base_cycle_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "a.yaml")


def test_unknown_key_names_file_key_and_closest(tmp_path):
    bad = write(tmp_path / "bad.yaml", "train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    msg = str(e.value)
    assert "bad.yaml" in msg and "unknown key 'train.learning_rate'" in msg and "did you mean 'train." in msg
    assert "\n" not in msg


def test_unknown_key_suggests_the_closest_valid_key():
    with pytest.raises(ConfigError, match=r"unknown key 'sample.ensemble_metod'; did you mean 'sample.ensemble_method'"):
        load_config(None, ["sample.ensemble_metod=mean"])


def test_unknown_section_is_named():
    with pytest.raises(ConfigError, match="unknown section 'trian'; did you mean 'train'"):
        load_config(None, ["trian.lr=1"])


@pytest.mark.parametrize("override, expected", [
    ("train.steps=abc", "expected int"),
    ("train.steps=1.5", "expected int"),
    ("train.lr=fast", "expected float"),
    ("model.learn_sigma=1", "expected bool"),      # 1 is not a bool: no silent truthiness
    ("train.steps=true", "expected int"),          # and True is not an int
    ("model.preset=3", "expected str"),
])
def test_override_types_are_checked(override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(None, [override])


def test_overrides_are_typed_not_strings():
    c = load_config(None, ["train.lr=3e-5", "sample.steps=10", "model.learn_sigma=true", "diffusion.beta_end=null"])
    assert c.train.lr == 3e-5 and isinstance(c.train.lr, float)
    assert c.sample.steps == 10 and c.model.learn_sigma is True and c.diffusion.beta_end is None


def test_int_is_accepted_for_a_float_field():
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0


def test_choice_fields_reject_unknown_values():
    with pytest.raises(ConfigError, match="'cosin' is not one of"):
        load_config(None, ["diffusion.schedule=cosin"])


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_malformed_override_and_yaml(tmp_path):
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(None, ["steps=3"])
    bad = write(tmp_path / "broken.yaml", "train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_every_field_has_a_default_and_a_comment():
    # STYLE.md: one comment per field. Checked on the source so a new field without one fails here.
    import inspect

    import minidp.config as cfg

    src = inspect.getsource(cfg)
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(section.type):
            line = next(l for l in src.splitlines() if l.strip().startswith(f"{f.name}:"))
            assert "#" in line, f"{section.name}.{f.name} has no comment"


# ----------------------------------------------------------------------------------------------------------
# Valid ranges declared with the fields
# ----------------------------------------------------------------------------------------------------------

# (override, the "key = value" the message must contain). Every ruled field appears at least once (checked below).
FIELD_CASES = [
    ("model.preset=tiny2", "model.preset = 'tiny2'"),
    ("model.class_dropout_prob=1.5", "model.class_dropout_prob = 1.5"),
    ("model.balance_alpha=-0.01", "model.balance_alpha = -0.01"),
    ("model.upcycle_experts=0", "model.upcycle_experts = 0"),
    ("model.upcycle_top_k=0", "model.upcycle_top_k = 0"),
    ("model.upcycle_every=0", "model.upcycle_every = 0"),
    ("data.dataset=coco", "data.dataset = 'coco'"),
    ("data.task=seg", "data.task = 'seg'"),
    ("data.resolution=7", "data.resolution = 7"),
    ("data.resolution=512", "data.resolution = 512"),
    ("data.num_classes=0", "data.num_classes = 0"),
    ("data.num_classes=1000", "data.num_classes = 1000"),
    ("data.seed=-1", "data.seed = -1"),
    ("data.train_size=0", "data.train_size = 0"),
    ("data.val_size=0", "data.val_size = 0"),
    ("data.val_offset=-1", "data.val_offset = -1"),
    ("data.amodal_white=0.5", "data.amodal_white = 0.5"),
    ("data.codec=sdvae", "data.codec = 'sdvae'"),
    ("data.workers=-1", "data.workers = -1"),
    ("train.rank_timeout_s=0", "train.rank_timeout_s = 0"),
    ("diffusion.schedule=cosin", "diffusion.schedule = 'cosin'"),
    ("diffusion.beta_start=0", "diffusion.beta_start = 0.0"),
    ("diffusion.beta_end=1", "diffusion.beta_end = 1.0"),
    ("diffusion.T=1", "diffusion.T = 1"),
    ("diffusion.prediction=noise", "diffusion.prediction = 'noise'"),
    ("diffusion.timestep_weights=[1,-1]", "diffusion.timestep_weights = [1.0, -1.0]"),
    ("diffusion.timestep_weights=[0,0]", "diffusion.timestep_weights = [0.0, 0.0]"),
    ("diffusion.timestep_weights=[1,.nan]", "diffusion.timestep_weights = [1.0, nan]"),
    ("diffusion.timestep_sampling=depth_relase", "did you mean 'depth_release'"),
    ("diffusion.timestep_sampling='perception:'", "diffusion.timestep_sampling = 'perception:'"),
    ("diffusion.ct_usage=both", "diffusion.ct_usage = 'both'"),
    ("train.augment=3", "train.augment = 3.0"),
    ("train.augment=-0.5", "train.augment = -0.5"),
    ("sample.correctional=the pink cube", "sample.correctional = 'the pink cube'"),
    ("sample.correctional_guidance=-1", "sample.correctional_guidance = -1.0"),
    ("sample.correctional_prompts=0", "sample.correctional_prompts = 0"),
    ("train.mode=multi", "train.mode = 'multi'"),
    ("train.out_dir=", "train.out_dir = ''"),
    ("train.steps=-5", "train.steps = -5"),
    ("train.steps=0", "train.steps = 0"),
    ("train.global_batch=0", "train.global_batch = 0"),
    ("train.micro_batch=-1", "train.micro_batch = -1"),
    ("train.lr=nan", "train.lr = nan"),
    ("train.lr=-1", "train.lr = -1.0"),
    ("train.lr=.inf", "train.lr = inf"),
    ("train.lr_schedule=cos", "train.lr_schedule = 'cos'"),
    ("train.lr_final=0", "train.lr_final = 0.0"),
    ("train.warmup_steps=-1", "train.warmup_steps = -1"),
    ("train.weight_decay=-0.1", "train.weight_decay = -0.1"),
    ("train.grad_clip=-1", "train.grad_clip = -1.0"),
    ("train.ema_decay=1.5", "train.ema_decay = 1.5"),
    ("train.seed=-1", "train.seed = -1"),
    ("train.log_every=0", "train.log_every = 0"),
    ("train.ckpt_every=0", "train.ckpt_every = 0"),
    ("train.eval_every=-1", "train.eval_every = -1"),
    ("train.device=tpu", "train.device = 'tpu'"),
    ("train.parallel=zero3", "train.parallel = 'zero3'"),
    ("train.loss=huber", "train.loss = 'huber'"),
    ("train.objective=e2e-ft", "train.objective = 'e2e-ft'"),
    ("sample.steps=0", "sample.steps = 0"),
    ("sample.spacing=uniform", "sample.spacing = 'uniform'"),
    ("sample.noise=normal", "sample.noise = 'normal'"),
    ("sample.eta=-0.5", "sample.eta = -0.5"),
    ("sample.eta=2", "sample.eta = 2.0"),
    ("sample.clip_x0=-1", "sample.clip_x0 = -1.0"),
    ("sample.schedule=cosin", "sample.schedule = 'cosin'"),
    ("sample.ensemble=0", "sample.ensemble = 0"),
    ("sample.ensemble_method=max", "sample.ensemble_method = 'max'"),
    ("sample.num_images=0", "sample.num_images = 0"),
    ("sample.batch=0", "sample.batch = 0"),
    ("sample.cfg_scale=-1", "sample.cfg_scale = -1.0"),
    ("sample.seed=-1", "sample.seed = -1"),
    ("train.cond_drop_prob=0.5", "train.cond_drop_prob = 0.5"),
    ("sample.image_guidance=-1", "sample.image_guidance = -1.0"),
    ("sample.text_guidance=-1", "sample.text_guidance = -1.0"),
    ("data.tasks={depht: 1}", "data.tasks = {'depht': 1.0}"),
    ("diffusion.task_timestep_weights={flow: [0, 0]}", "diffusion.task_timestep_weights = {'flow': [0.0, 0.0]}"),
    ("train.task_loss={amodal: l2}", "train.task_loss = {'amodal': 'l2'}"),
    ("sample.task=stereo", "sample.task = 'stereo'"),
]


@pytest.mark.parametrize("override, named", FIELD_CASES, ids=[c[0] for c in FIELD_CASES])
def test_out_of_range_value_is_one_line_naming_key_value_and_what_is_allowed(override, named):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    msg = str(e.value)
    assert named in msg and "\n" not in msg, msg
    assert "must be" in msg or "is not one of" in msg or "is not a preset" in msg, msg


def test_every_ruled_field_has_an_out_of_range_case():
    tested = {override.split("=")[0] for override, _ in FIELD_CASES}
    ruled = {f"{s.name}.{f.name}" for s in dataclasses.fields(Config) for f in dataclasses.fields(s.type)
             if "rule" in f.metadata}
    assert ruled <= tested, f"no FIELD_CASES entry for {sorted(ruled - tested)}"


def test_every_number_field_declares_a_range():
    # a new numeric key without a rule would accept -5 steps again (the first example)
    for s in dataclasses.fields(Config):
        for f in dataclasses.fields(s.type):
            if f.type in (int, float, "int", "float") or "float" in str(f.type):
                assert "rule" in f.metadata, f"{s.name}.{f.name} has no declared range"


def test_unknown_preset_names_the_closest_preset():
    with pytest.raises(ConfigError, match=r"model.preset = 'mirco' is not a preset.*did you mean 'micro'\?"):
        load_config(None, ["model.preset=mirco"])


def test_a_yaml_file_and_a_checkpoint_dict_go_through_the_same_rules(tmp_path):
    bad = write(tmp_path / "bad.yaml", "train:\n  steps: -5\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: train.steps = -5 must be an integer >= 1"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"ckpt.pt: train.steps = -5 must be an integer >= 1"):
        config_from_dict({"train": {"steps": -5}}, source="ckpt.pt")


def test_validate_checks_values_set_in_code():
    c = Config()
    c.sample.ensemble = 0  # bypasses _apply: validate must still see it
    with pytest.raises(ConfigError, match="sample.ensemble = 0"):
        validate(c)


def test_choices_are_read_from_the_modules_that_implement_them(monkeypatch):
    # a task added to tasks.TASKS is a valid data.task without an edit in config.py
    with pytest.raises(ConfigError, match="data.task = 'stereo'"):
        load_config(None, ["train.mode=finetune", "data.task=stereo"])
    monkeypatch.setitem(tasks.TASKS, "stereo", tasks.get("depth"))
    assert load_config(None, ["train.mode=finetune", "data.task=stereo"]).data.task == "stereo"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_pass_every_rule(path):
    validate(load_config(path))


def test_config_from_dict_leaves_cross_field_rules_to_validate():
    # sample.py: checkpoint config, then overrides, then validate once the config is final
    c = config_from_dict({"sample": {"steps": 5000}})
    with pytest.raises(ConfigError, match="sample.steps = 5000 must be <= diffusion.T = 1000"):
        validate(c)
    cfglib.apply_overrides(c, ["diffusion.T=5000"])
    assert validate(c) is c
