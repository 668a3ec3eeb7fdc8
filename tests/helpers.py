"""Shared test helpers: the micro depth run that the train.py tests start in-process, random DiT inputs, and a
small referring model and config for the sampling and evaluation tests.

Not a test file (pytest collects only test_*.py); test files import it as `from helpers import ...`, pytest's
rootdir-relative import mode puts tests/ on sys.path.
"""

from pathlib import Path

import torch

from minidp import dit, tasks
from minidp.config import Config

ROOT = Path(__file__).resolve().parent.parent

# A depth fine-tune of the micro DiT at 16 px from scratch: seconds per run. Evaluation is tiny too.
MICRO = [
    "model.preset=micro", "train.init_from=", "data.task=depth", "data.resolution=16", "data.train_size=64",
    "train.mode=finetune", "train.steps=3", "train.global_batch=4", "train.log_every=1", "train.lr=1e-3",
    "train.ema_decay=0.9", "sample.steps=2", "sample.num_images=2", "sample.batch=2",
]


def run_inprocess(out_dir, *extra):
    """train.py's main() on configs/depth.yaml + MICRO + extra overrides, writing to out_dir; its exit status."""
    import train  # the script; tests put the repository root on sys.path before calling this

    return train.main([str(ROOT / "configs" / "depth.yaml"), *MICRO, f"train.out_dir={out_dir}", *extra])


def dit_inputs(model, batch=3, groups=1, seed=1):
    """Random (x, t, y) for `model`: x (B, G*C, H, W), t in 0..999, y a class id."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, groups * model.in_channels, model.input_size, model.input_size, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    y = torch.randint(0, model.num_classes, (batch,), generator=g)
    return x, t, y


def text_model(seed=0):
    torch.manual_seed(seed)
    model = dit.build_dit("micro", input_size=16, in_channels=3, num_classes=10, learn_sigma=False)
    model = dit.add_text(dit.make_multitask(dit.widen_input(model, 2), 1), len(tasks.VOCAB))
    with torch.no_grad():  # leave adaLN-Zero's zeros behind, so every path changes the output
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def referring_cfg(**sample):
    cfg = Config()
    cfg.data.task, cfg.data.resolution = "referring", 16
    cfg.diffusion.prediction = "x0"
    cfg.sample.steps, cfg.sample.num_images, cfg.sample.batch, cfg.sample.ensemble = 1, 4, 4, 1
    for k, v in sample.items():
        setattr(cfg.sample, k, v)
    return cfg
