"""Datasets and batches: the synthetic world or a real dataset, batches built from them, and the latent cache.

A batch is a pure function of the sample indices (and, for referring / amodal, of a `pick` number choosing the
object), so the training loop can build any slice of any step's global batch on any rank. What each task makes
of a scene (condition images, target, read-back) lives in its task object (minidp/tasks/). Three sources feed the loop:

    the world        rendered once into memory (render_cache), on the device: a batch is an index, no copy
    a real dataset   minidp/readers.py behind a DataLoader with workers (RealLoader): each rank fetches, ahead
                     of time, its slice of every step's global batch, whose indices recipe.step_indices draws
                     from (train.seed, step) alone, so neither the number of ranks nor a resume changes them
    a latent cache   `python -m minidp.data cache CONFIG [overrides]` encodes the training samples once through
                     the codec into <data.latent_cache or train.out_dir/latents>/shard_*.pt + index.json;
                     train.py reads it when index.json exists and never runs the encoder (fast-DiT's features)

Index space (the same for every source): 0 .. data.train_size - 1 are training samples (the first train_size of
the training split, in the readers' sorted order); data.val_offset + j is validation sample j: the dataset's
validation split: Hypersim and FlyingChairs as published, ImageNet's root/val/<class>/ (labelled with train/'s
class list), pix2gestalt's official hold-out (the last 1 % of its sorted file names, as its loader splits them).

Notable choices:
- The world's training scenes are rendered once at start-up into memory holding only the keys the task reads
  (its task's scene_keys): rendering every batch on the fly costs about as much as a tiny model's training step on a
  CPU. Referring expressions are cached as token ids (tasks.scene_tokens), so the cache is all tensors.
- A real dataset yields the world's keys: label 0 where the dataset has no classes (fine-tuning conditions on the
  task's label row instead), and pix2gestalt's one object per sample as slot 0 (ref_masks = its visible mask).
- A file that cannot be read inside a DataLoader worker comes back as data ({"error": message}) and is raised in
  the training process, so the user sees the reader's one line naming the file, not a worker's traceback.
- A worker that dies (the OOM killer) ends the run in one line, exit status 3 (errors.FaultError): torch's SIGCHLD
  handler raises it wherever the loop is (errors.fault_of reads it), or the batch it was handing over breaks off.
- Masks follow the latents: a latent pixel counts in the loss only if all its downsample x downsample pixels are
  valid (Marigold's valid_mask_down).
- The latent cache stores float32 (the cached and uncached runs' losses agree to float rounding, a test checks it)
  and is refused, in one line, when built from another dataset, task, resolution or codec, or when a shard's
  size or sha256 differs from what index.json recorded when it was written (a truncated or changed file); `cache
  --verify` then encodes only those shards again. Tasks whose target
  depends on the object picked at each step (world amodal and referring) are not cached.
Letters: B batch, K condition images, C latent channels, H, W image size, h, w latent size.
"""

import functools
import hashlib
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from minidp import config as cfglib
from minidp import files, parallel, readers, recipe, render, tasks, vae, world
from minidp.errors import RESUME, ArgumentParser, FaultError, InputError, choose_device, int_in, one_line

DataError = (readers.DatasetError, vae.VAEWeightsError)  # bad data or weights: one line, exit status 2
CACHE_FORMAT = 2  # 2: index.json records each shard's size and sha256 ("checks")
CACHE_IDENTITY = ("dataset", "root", "task", "resolution", "codec", "vae_weights", "seed", "num_classes", "split_file")


# ----------------------------------------------------------------------------------------------------------
# Real datasets in the world's index space and keys
# ----------------------------------------------------------------------------------------------------------

def _reader(dataset, root, split, resolution, classes=None, split_file=""):
    cls = readers.DATASETS[dataset]
    if dataset == "imagenet":  # root/train/<class>/ and root/val/<class>/ (the val images sorted into classes)
        return cls(Path(root) / split, resolution=resolution, classes=classes)
    if split_file and (dataset == "flyingchairs" or split == "train"):  # data.split_file (Hypersim: training list)
        return cls(root, split=split, resolution=resolution, split_file=split_file)
    return cls(root, split=split, resolution=resolution)


class RealScenes(torch.utils.data.Dataset):
    """A real dataset indexed like the world (see the module docstring); items hold the task's scene keys."""

    def __init__(self, dataset, root, task, resolution, train_size, val_size, val_offset, num_classes, split_file=""):
        self.train = _reader(dataset, root, "train", resolution, split_file=split_file)
        # every reader has a validation split (pix2gestalt's: the official last 1 %, readers.Pix2Gestalt)
        self.val = _reader(dataset, root, "val", resolution, getattr(self.train, "classes", None), split_file)
        if len(self.train) < train_size:
            raise readers.DatasetError(f"{root}: {len(self.train)} training samples, fewer than data.train_size = "
                                       f"{train_size}; set data.train_size={len(self.train)}")
        if len(self.val) < val_size:
            raise readers.DatasetError(f"{root}: {len(self.val)} validation samples, fewer than data.val_size = "
                                       f"{val_size}; set data.val_size={len(self.val)}")
        if len(getattr(self.train, "classes", ())) > num_classes:
            raise readers.DatasetError(f"{root}: {len(self.train.classes)} class folders, more than data.num_classes "
                                       f"= {num_classes}; set data.num_classes={len(self.train.classes)}")
        self.keys, self.train_size, self.val_offset = tasks.get(task).scene_keys, train_size, val_offset

    def __len__(self):
        return self.train_size

    def __getitem__(self, index):
        # validation sample j is index val_offset + j
        source, i = (self.val, index - self.val_offset) if index >= self.val_offset else (self.train, index)
        try:
            item = source[i]
        except readers.DatasetError as e:
            return {"error": str(e), "index": index}  # raised by collate's caller, in the training process
        item.setdefault("label", torch.tensor(0, dtype=torch.long))  # no classes: fine-tuning uses the task's row
        if "ids" in item:  # pix2gestalt: one object per sample, in slot 0 (S = 1)
            item["ref_masks"] = (item["ids"] == 1)[None]  # (1, R, R)
            item["num_objects"] = torch.tensor(1, dtype=torch.long)
        return {**{k: item[k] for k in self.keys}, "index": torch.tensor(index, dtype=torch.long)}


def collate(items):
    """Stack a list of RealScenes items into scenes {key: (B, ...)}, or pass on the first item's read error."""
    for item in items:
        if "error" in item:
            return {"error": item["error"]}
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


def raise_error(scenes):
    if "error" in scenes:
        raise readers.DatasetError(scenes["error"])
    return scenes


@functools.lru_cache(maxsize=4)
def _real_scenes(*key):
    return RealScenes(*key)


def real_scenes(data_cfg):
    """The configured real dataset, opened once per process (listing ImageNet's folders takes a while)."""
    d = data_cfg
    return _real_scenes(d.dataset, str(Path(d.root)), d.task, d.resolution, d.train_size, d.val_size, d.val_offset,
                        d.num_classes, d.split_file)


# ----------------------------------------------------------------------------------------------------------
# Scenes and batches
# ----------------------------------------------------------------------------------------------------------

def render_scenes(data_cfg, indices, keys=None):
    """Scenes `indices` of the configured dataset: the world's full render dict (world.render_specs) + tokens,
    or a real dataset's task keys (read now, in this process). keys: the ones the caller reads (default: all); the
    world skips its second frame when none of them needs it."""
    for task in data_cfg.tasks or [data_cfg.task]:
        tasks.check_dataset_task(data_cfg.dataset, task)
    if data_cfg.dataset != "world":
        ds = real_scenes(data_cfg)
        return raise_error(collate([ds[int(i)] for i in indices]))
    second = keys is None or not set(keys).isdisjoint(render.SECOND_FRAME_KEYS)
    scenes = world.render(indices, resolution=data_cfg.resolution, seed=data_cfg.seed,
                          num_classes=data_cfg.num_classes, second_frame=second)
    scenes["tokens"] = tasks.scene_tokens(scenes["expressions"], scenes["ref_masks"].shape[1])  # (B, S, L)
    return scenes


def render_cache(data_cfg, n, chunk=256, run=None):
    """Scenes 0..n-1 rendered once into memory, `chunk` at a time, only the keys the tasks of `run` (default:
    data.task) read: {key: (n, ...) tensor}."""
    keys = tasks.scene_keys(run or [tasks.get(data_cfg.task)])
    chunks = (render_scenes(data_cfg, range(start, min(start + chunk, n)), keys) for start in range(0, n, chunk))
    parts = [{k: scenes[k] for k in keys} for scenes in chunks]  # each chunk's other keys are freed at once
    return {k: torch.cat([part[k] for part in parts]) for k in keys}


def make_batch(data_cfg, indices, device="cpu", cache=None, pick=None, task=None):
    """The sample dict of `task` (default: data.task's; Task.make_sample) for scenes `indices`, on `device`. `cache`: the world's
    render_cache, a RealLoader (the next batch it fetched, which must be `indices`) or a LatentCache (a batch
    already in latent space); None: rendered or read now. pick (B,) chooses the object of referring / amodal
    samples; default: the scene index."""
    idx = torch.as_tensor(list(indices) if not torch.is_tensor(indices) else indices, dtype=torch.long)
    if isinstance(cache, LatentCache):
        return cache.batch(idx.cpu(), device)
    task = task or tasks.get(data_cfg.task)
    if isinstance(cache, RealLoader):
        scenes = cache.next(idx.cpu())
    elif cache is not None:
        scenes = {k: v[idx] for k, v in cache.items()}
    else:
        scenes = render_scenes(data_cfg, idx.tolist(), task.scene_keys)  # make_sample reads only these
    return task.make_sample(scenes, idx if pick is None else pick, device, data_cfg)


def training_batch(cfg, run, plan, rows, device, cache):
    """Rows `rows` (a slice) of a step's global batch plan, from the training source `cache`."""
    if len(run) == 1:
        return make_batch(cfg.data, plan["indices"][rows], device, cache, plan["pick"][rows], run[0])
    return make_mixed_batch(cfg.data, run, plan["task"][rows], plan["indices"][rows], device, cache, plan["pick"][rows])


def make_mixed_batch(data_cfg, run, task, indices, device="cpu", cache=None, pick=None):
    """A generalist's batch: sample i is task run[task[i]] of scene indices[i] (the scaling paper's §6.4).

    Each task's samples are built by its make_sample and put back in batch order, with the release's input groups:
    "cond" = [rgb, the task's second condition image or a blank (zeros, the null image)]; "tokens" (B, L) are all
    padding (the null text, which adds exactly 0) except for referring samples. Also "target", "mask" (B, ...) and
    "task" (B,) long."""
    task = torch.as_tensor(task, dtype=torch.long)
    idx = torch.as_tensor(indices, dtype=torch.long)
    pick = idx if pick is None else torch.as_tensor(pick)
    B = len(idx)
    out = None
    for k, one in enumerate(run):
        rows = (task == k).nonzero().flatten()  # (B_k,) positions of this task's samples
        if len(rows) == 0:
            continue
        scenes = {key: v[idx[rows]] for key, v in cache.items()} if cache is not None else \
            render_scenes(data_cfg, idx[rows].tolist())
        s = one.make_sample(scenes, pick[rows], device, data_cfg)
        second = s["cond"][1] if len(s["cond"]) > 1 else torch.zeros_like(s["cond"][0])  # the blank image
        tokens = s.get("tokens", torch.zeros(len(rows), tasks.MAX_TOKENS, dtype=torch.long, device=device))
        parts = {"rgb": s["cond"][0], "second": second, "target": s["target"], "mask": s["mask"], "tokens": tokens}
        if out is None:
            out = {key: v.new_zeros((B, *v.shape[1:])) for key, v in parts.items()}
        for key, v in parts.items():
            out[key][rows.to(device)] = v
    return {"cond": [out.pop("rgb"), out.pop("second")], **out, "task": task.to(device)}


# ----------------------------------------------------------------------------------------------------------
# Latents: the codec between a batch and the model
# ----------------------------------------------------------------------------------------------------------

def make_codec(data_cfg, device="cpu"):
    """data.codec with data.vae_weights, on `device` (vae.make_codec; a bad weights file is a VAEWeightsError)."""
    options = {"weights": data_cfg.vae_weights} if data_cfg.codec != "pixel" else {}
    return vae.make_codec(data_cfg.codec, **options).to(device)


def latent_mask(mask, downsample):
    """(B, H, W) bool -> (B, H / d, W / d): a latent pixel is valid when all of its d x d pixels are."""
    return mask if downsample == 1 else -F.max_pool2d(-mask[:, None].float(), downsample)[:, 0] > 0.5  # a min-pool


def to_latents(batch, codec):
    """The batch with target, cond and mask in latent space (B, C, h, w); a latent-cache batch already is."""
    if batch.get("latents"):
        return batch
    return {**batch, "target": codec.encode(batch["target"]), "cond": [codec.encode(c) for c in batch["cond"]],
            "mask": latent_mask(batch["mask"], codec.downsample), "latents": True}


# ----------------------------------------------------------------------------------------------------------
# The training loop's sources: a real dataset through a DataLoader, the latent cache
# ----------------------------------------------------------------------------------------------------------

class StepBatches(torch.utils.data.Sampler):
    """This rank's micro-batches of steps start..steps-1, in the order the training loop asks for them: rank r
    takes rows [r * accum * micro, (r + 1) * accum * micro) of each step's global batch, as train.py slices it."""

    def __init__(self, cfg, start, rank, accum, micro):
        self.cfg, self.start, self.rank, self.accum, self.micro = cfg, start, rank, accum, micro

    def __len__(self):
        return (self.cfg.train.steps - self.start) * self.accum

    def __iter__(self):
        for step in range(self.start, self.cfg.train.steps):
            mine = recipe.step_indices(self.cfg, step).view(-1, self.micro)  # (world_size * accum, micro)
            yield from mine[self.rank * self.accum:(self.rank + 1) * self.accum].tolist()


class RealLoader:
    """A DataLoader over the real dataset, with data.workers workers fetching this rank's batches ahead."""

    def __init__(self, cfg, start, rank, accum, micro, pin_memory):
        dc = cfg.data
        self.loader = torch.utils.data.DataLoader(
            real_scenes(dc), batch_sampler=StepBatches(cfg, start, rank, accum, micro), num_workers=dc.workers,
            collate_fn=collate, pin_memory=pin_memory)
        self.batches = iter(self.loader)

    def next(self, indices):
        try:
            scenes = raise_error(next(self.batches))
        except (EOFError, ConnectionError) as e:  # a worker that died while handing a batch's shared memory over
            raise FaultError(f"a data loader worker died while handing over a batch ({type(e).__name__}); "
                             f"{RESUME}") from None
        if not torch.equal(scenes.pop("index"), indices):  # the sampler and the loop disagree: a bug, not input
            raise RuntimeError("RealLoader: the fetched batch is not the one the training loop asked for")
        return scenes


def cache_dir(cfg):
    return Path(cfg.data.latent_cache or Path(cfg.train.out_dir) / "latents")


def cache_identity(data_cfg):
    """What a cache's latents depend on, as index.json records it (paths resolved: a run may start elsewhere)."""
    d = data_cfg
    return {**{k: getattr(d, k) for k in CACHE_IDENTITY}, "root": str(Path(d.root).resolve()) if d.root else "",
            "vae_weights": str(Path(d.vae_weights).resolve()) if d.vae_weights else ""}


class LatentCache:
    """The shards of a latent cache, memory-mapped: {target (n, C, h, w), cond (n, K, C, h, w), mask (n, h, w),
    label (n,)} each, shard s holding samples s * shard_size ...; checked against the config on opening."""

    def __init__(self, folder, data_cfg):
        self.folder = Path(folder)
        try:
            index = json.loads((self.folder / "index.json").read_text())
        except (OSError, ValueError) as e:
            raise readers.DatasetError(f"{self.folder / 'index.json'}: not a readable latent cache index "
                                       f"({type(e).__name__})") from None
        for key, value in cache_identity(data_cfg).items():
            if index.get(key) != value:
                raise readers.DatasetError(
                    f"latent cache {self.folder} was built with data.{key} = {index.get(key)!r}, this config says "
                    f"{value!r}; rebuild it (python -m minidp.data cache CONFIG) or set data.latent_cache")
        if index["size"] < data_cfg.train_size:
            raise readers.DatasetError(f"latent cache {self.folder} holds {index['size']} samples, fewer than "
                                       f"data.train_size = {data_cfg.train_size}; rebuild it")
        self.size, self.shard_size = index["size"], index["shard_size"]
        for name in index["shards"]:  # a shard truncated or changed on disk is named, never read
            problem = verify_shard(self.folder / name, index.get("checks", {}).get(name))
            if problem:
                raise readers.DatasetError(f"latent cache shard {self.folder / name}: {problem}; re-encode the bad "
                                           "shards with python -m minidp.data cache CONFIG --verify")
        self.shards = [torch.load(self.folder / name, map_location="cpu", weights_only=True, mmap=True)
                       for name in index["shards"]]

    def batch(self, idx, device):
        rows = [(int(i) // self.shard_size, int(i) % self.shard_size) for i in idx]
        get = lambda key: torch.stack([self.shards[s][key][r] for s, r in rows]).to(device)  # noqa: E731
        cond = get("cond")  # (B, K, C, h, w)
        return {"target": get("target"), "cond": list(cond.unbind(1)), "mask": get("mask"), "label": get("label"),
                "latents": True}


def check_sources(cfg):
    """Everything about the data that can be wrong, checked before train.py writes anything: the real dataset's
    folder and sizes, an existing latent cache's identity."""
    if cfg.data.dataset != "world":
        real_scenes(cfg.data)
    if (cache_dir(cfg) / "index.json").is_file():
        LatentCache(cache_dir(cfg), cfg.data)
        if cfg.train.augment:  # ADDP's augmentation corrupts pixels before the codec; a cache holds only latents
            raise readers.DatasetError(f"train.augment = {cfg.train.augment} needs the pixels, but training would "
                                       f"read the latent cache {cache_dir(cfg)}: delete it or set train.augment=0")


def training_source(cfg, start, rank, accum, micro, device):
    """What make_batch reads training batches from, and a line saying what it is."""
    dc = cfg.data
    folder = cache_dir(cfg)
    if (folder / "index.json").is_file():
        cache = LatentCache(folder, dc)
        return cache, f"reading the latent cache {folder} ({cache.size} samples, codec {dc.codec}): no encoder runs"
    if dc.dataset == "world":
        # every rank holds every scene (any rank may need any index), on the device
        cache = parallel.to_device(render_cache(dc, dc.train_size, run=tasks.run_tasks(cfg)), device)
        return cache, f"{dc.train_size} training scenes of the world at {dc.resolution} px rendered"
    loader = RealLoader(cfg, start, rank, accum, micro, pin_memory=device.type == "cuda")
    return loader, (f"{dc.train_size} of {len(loader.loader.dataset.train)} training samples of {dc.dataset} in "
                    f"{dc.root} at {dc.resolution} px, loader workers per rank: {dc.workers}")


# ----------------------------------------------------------------------------------------------------------
# Building the latent cache: python -m minidp.data cache CONFIG [overrides]
# ----------------------------------------------------------------------------------------------------------

def encode_shard(data_cfg, codec, first, last, batch, device):
    """Training samples first..last-1 through the codec: {target (n, C, h, w), cond (n, K, C, h, w), mask, label}."""
    parts = {"target": [], "cond": [], "mask": [], "label": []}
    for start in range(first, last, batch):
        lat = to_latents(make_batch(data_cfg, list(range(start, min(start + batch, last))), device), codec)
        for key in ("target", "mask", "label"):
            parts[key].append(lat[key].cpu())
        parts["cond"].append(torch.stack(lat["cond"], 1).cpu() if lat["cond"] else
                             lat["target"].cpu()[:, :0, None])  # (B, K, C, h, w); K = 0 for class
    return {k: torch.cat(v) for k, v in parts.items()}


def build_cache(cfg, device, batch=64, shard_size=4096, log=print, verify=False):
    """Encode training samples 0..train_size-1 through the codec into cache_dir(cfg); index.json is written last,
    so a cache interrupted half-way is never read. verify: keep the shards that match index.json (verify_shard)
    and re-encode only the others; a cache of another config, or none, is built whole. Returns the shards rebuilt."""
    dc, folder = cfg.data, cache_dir(cfg)
    if not tasks.get(dc.task).cacheable(dc.dataset):
        raise readers.DatasetError(f"data.task = {dc.task!r} on data.dataset = {dc.dataset!r} cannot be cached: its "
                                   "target depends on the object each step picks")
    codec = make_codec(dc, device)
    folder.mkdir(parents=True, exist_ok=True)
    old = reusable_index(folder, dc) if verify else None
    if old is None:
        (folder / "index.json").unlink(missing_ok=True)
    else:
        shard_size = old["shard_size"]  # the shards kept fix the layout
    n, names, checks, rebuilt, t0 = dc.train_size, [], {}, [], time.time()
    for first in range(0, n, shard_size):
        names.append(f"shard_{len(names):05d}.pt")
        path = folder / names[-1]
        if old is not None:
            problem = verify_shard(path, old.get("checks", {}).get(names[-1]))
            if problem is None:
                checks[names[-1]] = old["checks"][names[-1]]
                continue
            log(f"{path}: {problem}; encoding it again")
        shard = encode_shard(dc, codec, first, min(first + shard_size, n), batch, device)
        files.atomic_write(path, lambda f: torch.save(shard, f))
        checks[names[-1]] = shard_checks(path)
        rebuilt.append(names[-1])
        log(f"encoded {min(first + shard_size, n)}/{n} samples ({time.time() - t0:.0f}s)")
    index = {"format": CACHE_FORMAT, **cache_identity(dc), "size": n, "shard_size": shard_size, "shards": names,
             "checks": checks}
    files.write_text(folder / "index.json", json.dumps(index, indent=1) + "\n")
    return rebuilt


# ----------------------------------------------------------------------------------------------------------
# Checking a cache's shards: each one's size and sha256, as index.json records them
# ----------------------------------------------------------------------------------------------------------

def shard_checks(path):
    """{"bytes", "sha256"} of a shard file as it is on disk (sha256 reads ~1 GB/s on one core)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):  # 16 MB at a time (hashlib.file_digest is Python 3.11+)
            digest.update(chunk)
    return {"bytes": Path(path).stat().st_size, "sha256": digest.hexdigest()}


def verify_shard(path, checks):
    """What is wrong with the shard at `path` against its index.json record `checks`, or None if nothing."""
    if not Path(path).is_file():
        return "missing"
    if not isinstance(checks, dict):
        return "index.json records no size or checksum for it (a cache from before minidp recorded them)"
    size = Path(path).stat().st_size
    if size != checks.get("bytes"):
        return f"{size} bytes, index.json records {checks.get('bytes')}"
    if shard_checks(path)["sha256"] != checks.get("sha256"):
        return "its bytes differ from the sha256 index.json records (changed on disk after it was written)"
    return None


def reusable_index(folder, data_cfg):
    """index.json of a cache built for this config (whose good shards --verify keeps), or None."""
    try:
        index = json.loads((folder / "index.json").read_text())
    except (OSError, ValueError):
        return None
    same = all(index.get(k) == v for k, v in cache_identity(data_cfg).items())
    return index if same and index.get("size") == data_cfg.train_size and index.get("shard_size") else None


def main(argv=None):
    p = ArgumentParser(prog="python -m minidp.data", description="Encode a dataset into a latent cache.")
    p.add_argument("command", choices=["cache"])
    p.add_argument("config", help="the training config, e.g. configs/real/depth_hypersim.yaml")
    p.add_argument("overrides", nargs="*", help="section.key=value, as train.py takes them")
    p.add_argument("--batch", type=int_in(1, 1 << 16), default=64, help="images per encoder forward")
    p.add_argument("--shard-size", type=int_in(1, 1 << 24), default=4096, help="samples per shard file")
    p.add_argument("--verify", action="store_true", help="check every shard against index.json's size and sha256 "
                   "and encode only the bad ones again")
    args = p.parse_args(argv)
    try:
        cfg = cfglib.load_config(args.config, args.overrides)
        tasks.check_dataset_task(cfg.data.dataset, cfg.data.task)
        device = choose_device(cfg.train.device)
        rebuilt = build_cache(cfg, device, args.batch, args.shard_size, verify=args.verify)
    except (cfglib.ConfigError, InputError, ValueError) as e:  # DatasetError, VAEWeightsError are too
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot write the latent cache ({e.strerror or one_line(e)})", file=sys.stderr)
        return 2
    except FaultError as e:  # a write the OS refused half-way: the shard or index before it is unchanged
        print(f"error: {e}", file=sys.stderr)
        return 3
    what = "every shard matches index.json" if args.verify and not rebuilt else f"{len(rebuilt)} shard(s) encoded"
    print(f"latent cache {cache_dir(cfg)}: {what}; train.py {args.config} reads it from there")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
