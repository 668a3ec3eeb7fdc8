"""The rules between config fields (minidp/config_rules.py): each rule's failing case is one line naming the
keys and values, every registered rule has such a case, and values next to a boundary pass.

Run: pytest -q tests/test_config_rules.py
"""

import pytest

from minidp import config as cfglib
from minidp import config_rules, dit, moe
from minidp.config import Config, ConfigError, load_config


CROSS_CASES = [
    # resolution vs the preset's patch size (tiny: 4), DiT-MoE presets included
    (["data.resolution=18"], "data.resolution = 18 must be divisible by 4"),
    (["model.preset=tiny-8E2A", "data.resolution=18"], "data.resolution = 18 must be divisible by 4"),
    (["model.preset=DiT-S/8", "data.resolution=36"], "data.resolution = 36 must be divisible by 8"),
    (["train.global_batch=10", "train.micro_batch=4"], "train.global_batch = 10 must be divisible by train.micro_batch = 4"),
    (["train.micro_batch=512"], "train.global_batch = 256 must be divisible by train.micro_batch = 512"),
    (["train.lr_schedule=exp", "train.lr=1e-5", "train.lr_final=1e-4"], "train.lr_final = 0.0001 must be <= train.lr = 1e-05"),
    (["sample.steps=5000"], "sample.steps = 5000 must be <= diffusion.T = 1000"),
    (["diffusion.T=100", "sample.steps=101"], "sample.steps = 101 must be <= diffusion.T = 100"),
    (["data.train_size=100", "data.val_offset=99"], "data.val_offset = 99 must be >= data.train_size = 100"),
    (["train.mode=finetune", "data.task=depth", "sample.num_images=1025"], "sample.num_images = 1025 must be <= data.val_size = 1024"),
    (["diffusion.timestep_weights=[1,1,1]"], "diffusion.timestep_weights = [1.0, 1.0, 1.0] has 3 groups"),
    (["diffusion.beta_start=0.05"], "diffusion.beta_start = 0.05 must be <= diffusion.beta_end = 0.02"),
    (["diffusion.schedule=scaled_linear", "diffusion.beta_end=0.0005"], "diffusion.beta_start = 0.00085 must be <="),
    (["diffusion.zero_terminal_snr=true"], "diffusion.zero_terminal_snr = True needs diffusion.prediction 'v' or 'x0'"),
    (["data.task=depth"], "data.task = 'depth' needs train.mode = 'finetune'"),
    (["train.upcycle_from=dense.pt"], "train.upcycle_from = 'dense.pt' needs train.mode = 'finetune'"),
    (["train.mode=finetune", "data.task=depth", "train.upcycle_from=d.pt", "train.init_from=p.pt"],
     "train.init_from = 'p.pt' and train.upcycle_from = 'd.pt' are both set"),
    (["model.upcycle_experts=2", "model.upcycle_top_k=3"], "model.upcycle_top_k = 3 must be <= model.upcycle_experts = 2"),
    (["model.preset=micro", "model.upcycle_every=3"], "model.upcycle_every = 3 must be <= 2"),
    # real data and the SD VAE (issue 13)
    (["data.dataset=imagenet"], "data.dataset = 'imagenet' needs data.root"),
    (["data.codec=sd-vae"], "data.codec = 'sd-vae' needs data.vae_weights"),
    (["data.num_classes=31"], "data.num_classes = 31 must be <= 30 for data.dataset = 'world'"),
    (["data.dataset=imagenet", "data.root=x", "data.num_classes=1000"], None),  # any number of class folders
    (["data.dataset=imagenet", "data.root=x", "data.split_file=list.txt"], "data.split_file is read for hypersim and "
                                                                          "flyingchairs only, not data.dataset = 'imagenet'"),
    (["data.codec=sd-vae", "data.vae_weights=v.bin", "data.resolution=32"], None),  # 4x4 latents, patch 4
    (["data.codec=sd-vae", "data.vae_weights=v.bin", "data.resolution=48"], "data.resolution = 48 must be divisible by 32"),
    (["diffusion.timestep_weights=[1,2]", "diffusion.timestep_sampling=diffusion"], "both set c_t^2"),
    (["train.mode=finetune", "data.task=depth", "train.augment=1"], "train.augment = 1.0 needs diffusion.prediction 'x0'"),
    (["train.augment=0.5", "diffusion.prediction=x0"], "not data.task 'class'"),
    (["sample.correctional=auto"], "sample.correctional = 'auto' needs a text task (referring), not 'class'"),
    (["train.mode=finetune", "data.task=referring", "sample.correctional=the red box", "sample.intermediates=true"],
     "sample.correctional and sample.intermediates"),
    (["train.mode=multitask"], "train.mode = 'multitask' needs data.tasks"),
    (["train.mode=multitask", "data.task=depth", "data.tasks={depth: 1}", "diffusion.prediction=x0", "train.augment=1"],
     "train.augment = 1.0 is not supported with train.mode = 'multitask'"),
    (["train.mode=multitask", "data.tasks={depth: 1}", "diffusion.ct_usage=loss"], "ct_usage = 'loss' is not supported"),
    (["train.mode=finetune", "data.task=depth", "train.task_loss={amodal: l1}"], "train.task_loss = {'amodal': 'l1'} is for"),
    # end-to-end fine-tuning and zero-noise sampling (issue 23)
    (["train.objective=e2e", "sample.ensemble=1"], "train.objective = 'e2e' fine-tunes one perception task"),
    (["train.objective=e2e", "train.mode=finetune", "data.task=depth", "sample.ensemble=1", "diffusion.prediction=x0",
      "train.augment=0.5"], "train.augment = 0.5 needs a noised target"),
    (["train.objective=e2e", "train.mode=finetune", "data.task=depth", "sample.ensemble=1"], None),
    (["sample.noise=zeros", "sample.ensemble=2"], "sample.noise = zeros makes every one of sample.ensemble = 2"),
    (["sample.noise=zeros", "sample.ensemble=1"], None),
]


@pytest.mark.parametrize("overrides, named", CROSS_CASES, ids=[" ".join(c[0]) for c in CROSS_CASES])
def test_cross_field_rule_is_one_line_naming_keys_and_values(overrides, named):
    if named is None:  # a case the rules must accept
        load_config(None, overrides)
        return
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert named in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_every_cross_rule_has_a_failing_case():
    fired = set()
    for overrides, _ in CROSS_CASES:
        c = Config()
        for text in overrides:  # the values without load_config's validate, then each rule on its own
            section, key, value = cfglib.parse_override(text)
            cfglib._apply(c, {section: {key: value}}, "test")
        fired |= {rule.__name__ for rule in config_rules.CROSS_RULES if rule(c)}
    assert fired == {rule.__name__ for rule in config_rules.CROSS_RULES}


def test_patch_sizes_come_from_the_preset_tables():
    # independent reference: the patch size the built model actually uses
    for name, build in [("micro", dit.DiT_models["micro"]), ("micro-4E2A", moe.DiTMoE_models["micro-4E2A"])]:
        p = build(input_size=8, in_channels=3, num_classes=10).patch_size
        assert cfglib.PRESETS[name]["patch_size"] == p


@pytest.mark.parametrize("overrides", [
    ["model.preset=micro", "data.resolution=18"],               # micro's patch is 2
    ["train.global_batch=12", "train.micro_batch=4"],
    ["train.lr=1e-5", "train.lr_final=1e-4"],                   # lr_final only matters for the exp schedule
    ["sample.steps=1000"],                                      # = T: every timestep once
    ["data.train_size=100", "data.val_offset=100"],             # adjacent, not overlapping
    ["diffusion.schedule=cosine", "diffusion.beta_start=0.5"],  # cosine ignores the betas
    ["diffusion.zero_terminal_snr=true", "diffusion.prediction=v"],
    ["diffusion.timestep_weights=[0,1,0,1,0]"],                 # 5 groups of 200 steps, some zero
    ["train.mode=finetune", "data.task=depth", "train.steps=3", "train.warmup_steps=100"],  # see config.py's docstring
], ids=lambda o: " ".join(o))
def test_values_next_to_a_rule_boundary_are_accepted(overrides):
    load_config(None, overrides)
