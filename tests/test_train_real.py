"""train.py on real-dataset layouts and the SD VAE: the codecs are interchangeable, the DataLoader path keeps the
world's determinism (2 gloo ranks equal 1 process, resume is exact), a latent-cached run equals an uncached one,
and bad data is one line with exit status 2. Datasets are tiny Hypersim trees written here (tests/test_data.py),
the VAE a random one of SD's structure at width 32 saved to a file (the codec reads its shape from the file).

Run: pytest -q tests/test_train_real.py     (about half a minute: 2 gloo ranks once, train.py in-process several times)
"""

import json
import sys
from pathlib import Path

import pytest
import torch
from test_data import hypersim_tree

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from helpers import MICRO, train_ranks, run_inprocess, wait_all  # noqa: E402
from minidp import config, data, vae  # noqa: E402

# Hypersim frames of 20 x 24 px, read at 16 px (shorter side resized, centre crop); 6 for training, 2 held out.
HYPERSIM = ["data.dataset=hypersim", "data.train_size=6", "data.val_size=2", "data.workers=1"]


def losses(out_dir):
    return [json.loads(line)["loss"] for line in (Path(out_dir) / "log.jsonl").read_text().splitlines()]


def ckpt(out_dir):
    return torch.load(Path(out_dir) / "ckpt.pt", weights_only=True)


@pytest.fixture(scope="module")
def hypersim(tmp_path_factory):
    return hypersim_tree(tmp_path_factory.mktemp("hypersim"), n_train=6, n_val=2)


@pytest.fixture(scope="module")
def vae_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vae") / "diffusion_pytorch_model.bin"
    torch.save(vae.AutoencoderKL(block_out_channels=(32, 32, 32, 32), layers_per_block=1).state_dict(), path)
    return path  # ~0.9 MB; SD's own is 335 MB


def sd_vae(path):
    return ["data.codec=sd-vae", f"data.vae_weights={path}", "data.resolution=64"]  # 64 px -> 8 x 8 x 4 latents


# ----------------------------------------------------------------------------------------------------------
# Codecs
# ----------------------------------------------------------------------------------------------------------

def test_pixel_and_sd_vae_codecs_both_train_and_evaluate_depth(tmp_path, vae_file, capsys):
    # 2 steps of the world's depth task with each codec (pixels at 32 px, the VAE's 64 px as 8 x 8 latents); the
    # model's input follows the codec
    for name, extra in (("pixel", ["data.resolution=32"]), ("sd-vae", sd_vae(vae_file))):
        out = tmp_path / name
        assert run_inprocess(out, "train.steps=2", *extra) == 0, capsys.readouterr().err
        saved = ckpt(out)
        assert saved["config"]["data"]["codec"] == name
        assert (saved["model_config"]["in_channels"], saved["model_config"]["input_size"]) == \
            ((3, 32) if name == "pixel" else (4, 8))
        assert all(map(lambda x: x == x, losses(out))) and len(losses(out)) == 2  # finite
        result = json.loads((out / "eval.json").read_text())  # decoded back to pixels and read as depth
        assert 0 < result["absrel"] < float("inf")
    # sample.py rebuilds the codec from the checkpoint's config (the VAE file it names) and decodes the same way
    import sample  # the script (the repository root is on sys.path)

    assert sample.main([str(tmp_path / "sd-vae"), "sample.num_images=1", "--out", str(tmp_path / "again")]) == 0
    assert json.loads((tmp_path / "again" / "eval.json").read_text())["num_images"] == 1
    # resuming a run with the other codec is refused before anything is written
    capsys.readouterr()
    assert run_inprocess(tmp_path / "pixel", "train.steps=3", *sd_vae(vae_file), "data.resolution=32") == 2
    assert "was trained with data.codec = 'pixel'" in capsys.readouterr().err


TRAIN_CONFIGS = sorted(ROOT.glob("configs/*.yaml")) + sorted(ROOT.glob("configs/*/*.yaml"))


@pytest.mark.parametrize("path", [p for p in TRAIN_CONFIGS if p.parent.name != "sweeps"], ids=lambda p: p.name)
def test_every_config_accepts_either_codec(path):
    # the cross rules hold with either codec: the resolution fits the preset's patch x the codec's downsampling
    for overrides in (["data.codec=pixel"], ["data.codec=sd-vae", "data.vae_weights=v.bin"]):
        cfg = config.load_config(path, overrides)
        assert cfg.data.codec == overrides[0].split("=")[1]


# ----------------------------------------------------------------------------------------------------------
# The DataLoader path: determinism across ranks and resumes
# ----------------------------------------------------------------------------------------------------------

def test_ddp_two_gloo_ranks_equal_one_process_on_a_real_dataset(tmp_path, hypersim):
    real = [*HYPERSIM, f"data.root={hypersim}"]
    assert run_inprocess(tmp_path / "one", *real) == 0
    ranks = train_ranks(tmp_path / "two", *real, cwd=tmp_path)  # 2 gloo ranks: tests/helpers.py
    code, err = wait_all(ranks)
    assert code == 0, err
    assert "loader workers per rank: 1" in ranks[0].out()
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-5, abs=0)
    a, b = ckpt(tmp_path / "one")["model"], ckpt(tmp_path / "two")["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a), "2 ranks' parameters differ from 1 process"
    moved = ckpt(tmp_path / "one")  # and training did something: the zero-initialised output layer moved
    assert any(v.abs().sum() > 0 for k, v in moved["model"].items() if k.startswith("final_layer.linear"))


def test_resume_is_exact_on_a_real_dataset(tmp_path, hypersim):
    real = [*HYPERSIM, f"data.root={hypersim}"]
    assert run_inprocess(tmp_path / "full", *real, "train.steps=5") == 0
    assert run_inprocess(tmp_path / "split", *real, "train.steps=2") == 0
    assert run_inprocess(tmp_path / "split", *real, "train.steps=5") == 0  # the loader starts at step 2
    assert losses(tmp_path / "full") == pytest.approx(losses(tmp_path / "split"), rel=1e-6, abs=0)
    a, b = ckpt(tmp_path / "full")["model"], ckpt(tmp_path / "split")["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


# ----------------------------------------------------------------------------------------------------------
# The latent cache
# ----------------------------------------------------------------------------------------------------------

def test_a_latent_cached_run_gives_the_uncached_runs_losses(tmp_path, hypersim, vae_file, capsys):
    # Hypersim through the SD VAE at 64 px. Tolerance: rel 1e-5 (the encoder sees batches of another size when
    # caching, and a convolution's float32 sums may round differently; the inputs are otherwise identical)
    real = [*HYPERSIM, f"data.root={hypersim}", *sd_vae(vae_file), "data.workers=0", "train.steps=4"]
    cached = [*real, f"data.latent_cache={tmp_path / 'latents'}"]
    args = ["cache", str(ROOT / "configs" / "depth.yaml"), *MICRO, *cached, f"train.out_dir={tmp_path / 'c'}"]
    assert data.main([*args, "--shard-size=4", "--batch=3"]) == 0  # 2 shards, batches across shard ends
    index = json.loads((tmp_path / "latents" / "index.json").read_text())
    assert index["size"] == 6 and index["shards"] == ["shard_00000.pt", "shard_00001.pt"]
    assert run_inprocess(tmp_path / "plain", *real) == 0
    assert "loader workers" in capsys.readouterr().out
    assert run_inprocess(tmp_path / "c", *cached) == 0
    assert "reading the latent cache" in capsys.readouterr().out
    assert losses(tmp_path / "c") == pytest.approx(losses(tmp_path / "plain"), rel=1e-5, abs=0)
    # a cache built with another codec is refused, in one line, before anything is written
    rc = run_inprocess(tmp_path / "other", *[o for o in cached if "codec" not in o and "vae_weights" not in o])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "was built with data.codec = 'sd-vae'" in err, err
    assert not (tmp_path / "other").exists()


def test_world_amodal_cannot_be_cached(tmp_path, capsys):
    rc = data.main(["cache", str(ROOT / "configs" / "amodal.yaml"), "data.train_size=4",
                    f"data.latent_cache={tmp_path}"])
    assert rc == 2 and "cannot be cached" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# Bad input: one line, exit status 2
# ----------------------------------------------------------------------------------------------------------

def bad_run(out, capsys, *extra):
    rc = run_inprocess(out, *extra)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err, err
    return err


def test_bad_missing_dataset_root(tmp_path, capsys):
    err = bad_run(tmp_path / "run", capsys, *HYPERSIM, f"data.root={tmp_path / 'nowhere'}")
    assert "nowhere/train: no such folder" in err
    assert not (tmp_path / "run").exists()


def test_bad_vae_weights_missing_or_with_wrong_keys(tmp_path, capsys):
    err = bad_run(tmp_path / "run", capsys, *sd_vae(tmp_path / "missing.bin"))
    assert "missing.bin: no such VAE weights file" in err
    wrong = tmp_path / "wrong.bin"
    torch.save({"encoder.conv_in.weight": torch.zeros(32, 3, 3, 3)}, wrong)
    err = bad_run(tmp_path / "run", capsys, *sd_vae(wrong))
    assert "wrong.bin" in err and "missing keys" in err
    assert not (tmp_path / "run").exists()


def test_bad_image_that_cannot_be_decoded_names_the_file(tmp_path, capsys):
    root = hypersim_tree(tmp_path / "hypersim", n_train=6)
    broken = sorted((root / "train").glob("*/rgb_*.png"))[2]
    broken.write_bytes(b"\x89PNG\r\n\x1a\n but the rest is not a PNG")
    # read in a DataLoader worker process, yet reported as the reader's one line
    err = bad_run(tmp_path / "run", capsys, *HYPERSIM, f"data.root={root}", "train.steps=20")
    assert f"{broken}: cannot decode image" in err
