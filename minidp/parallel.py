"""Distributed and fast training plumbing: torchrun's environment, DDP or FSDP, full checkpoints, the fast step.

train.py's loop stays one readable loop (STYLE.md); what differs between one process, DDP and FSDP, and between
a CPU and a GPU, is written here once, as small functions the loop calls by name:

    env = parallel.from_torchrun(train.device)        # rank, world size, device, backend (gloo | nccl)
    parallel.init(env)                                # the process group (nothing for one process)
    train_model = parallel.wrap(model, ema, env, how)  # DDP(model) | fully_shard(model) | model
    opt = parallel.make_optimizer(model, lr, wd, env.device)
    parallel.full_state_dict(model), parallel.optimizer_state_dict(model, opt)   # rank 0 gets the full state

References: PyTorch DDP (Li et al., VLDB 2020), FSDP (Zhao et al., VLDB 2023; torch.distributed.fsdp.fully_shard
is "FSDP2", one DTensor shard per parameter), nanoGPT's ~20 lines of torchrun plumbing.

Notable choices:
- Device and backend: CUDA + nccl when every local rank gets its own GPU, else CPU + gloo. nccl refuses two
  ranks on one device, so 2 ranks on a 1-GPU machine (the DDP tests) run on the CPU instead of failing;
  `train.device = cuda` with fewer GPUs than local ranks is an error that says so.
- FSDP shards every transformer block, then the root (embeddings, final layer): the usual FSDP2 recipe, so a
  block's parameters are gathered just before it runs and freed after. The EMA copy is sharded the same way,
  so its update stays elementwise on local shards; only checkpoints and evaluation gather it.
- Checkpoints keep one format whatever the parallelism: the full model / EMA state dicts and the optimizer
  state keyed by parameter index (torch.optim's own format), gathered on rank 0. So an FSDP run resumes under
  DDP or in one process and the other way round. FSDP's full optimizer state is keyed by parameter name; the
  two helpers below translate it through `named_parameters()`, whose order is the optimizer's.
- AdamW: `fused=True` on CUDA (one kernel for the whole update: the issue's H100 table measured it, with
  torch.compile, at 1.6x eager foreach) and on the CPU (float32 there: ~2 ms against foreach's ~6 ms a step for
  the tiny DiT on 2 cores, issue 25); `foreach=True` for FSDP's sharded parameters on the CPU.
- TF32 for float32 matmuls on CUDA (bf16 autocast covers most of the step; the rest, e.g. the optimizer's
  and EMA's float32 math, is elementwise and unaffected).
- `train.compile`: `nn.Module.compile()` compiles in place, so state-dict keys keep DiT's names (no
  `_orig_mod.` prefix). Under FSDP each block is compiled on its own (FSDP2's documented pattern; the hooks
  between blocks stay eager).
"""

import contextlib
import datetime
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from minidp.checkpoint import architecture
from minidp.errors import choose_device


@dataclass(frozen=True)
class Env:
    """This process's place in the run: torchrun's variables, the device it computes on and the backend."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    distributed: bool = False   # started by torchrun (even with one rank: the same code path as many)
    device: torch.device = torch.device("cpu")

    @property
    def master(self):
        return self.rank == 0   # rank 0 logs, checkpoints and evaluates (nanoGPT's master_process)

    @property
    def backend(self):
        return "nccl" if self.device.type == "cuda" else "gloo"


def from_torchrun(device_pref, environ=None):
    """The Env torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE (one process if unset)."""
    environ = os.environ if environ is None else environ
    rank, world_size = int(environ.get("RANK", 0)), int(environ.get("WORLD_SIZE", 1))
    local_rank = int(environ.get("LOCAL_RANK", 0))
    local_world_size = int(environ.get("LOCAL_WORLD_SIZE", world_size))
    return Env(rank, world_size, local_rank, "RANK" in environ,
               choose_device(device_pref, local_rank, local_world_size))


def init(env, timeout_s=1800):
    """Start the process group (when under torchrun) and the fast-math settings of this device. A collective that
    waits `timeout_s` seconds for a rank raises (errors.fault_of: one line); a rank that died is seen at once."""
    if env.device.type == "cuda":
        torch.cuda.set_device(env.device)
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 matmuls outside autocast: TF32 tensor cores
        torch.backends.cudnn.allow_tf32 = True
    if env.distributed:
        dist.init_process_group(backend=env.backend, timeout=datetime.timedelta(seconds=timeout_s))


def destroy(env):
    if env.distributed:
        dist.barrier()
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------------------
# Wrapping the model, the optimizer
# ----------------------------------------------------------------------------------------------------------

def shard(module, env):
    """FSDP2 in place: each transformer block, then the root. `module` becomes an FSDPModule; its parameters
    are DTensors holding this rank's 1/world_size of each."""
    # imported here, not at the top: FSDP and its state-dict helpers cost ~1.5 s of every process's start-up,
    # and only a train.parallel=fsdp run under torchrun uses them
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(env.device.type, (env.world_size,))  # explicit: the default mesh prefers CUDA
    for block in module.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(module, mesh=mesh)
    return module


def wrap(model, ema, env, how, compile_model=False):
    """The module the loop calls: `model` itself (one process, or FSDP, which shards it and `ema` in place) or
    DDP(model). `how` is train.parallel; `compile_model` is train.compile."""
    if compile_model and not (env.distributed and how == "fsdp"):
        model.compile()  # in place: the state dict keeps its keys
    if not env.distributed:
        return model
    if how == "fsdp":
        shard(model, env)
        shard(ema, env)  # the same shards as the model: the EMA update stays local and elementwise
        if compile_model:
            for block in model.blocks:
                block.compile()
        return model
    # No find_unused_parameters even for MoE: an expert no token picked still runs on an empty slice, so
    # every parameter gets a (zero) gradient (tests/test_moe.py checks it).
    return DDP(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)


def gradient_sync(train_model, last):
    """Context for one micro-step's backward: gradients are reduced across ranks only on the last one."""
    if isinstance(train_model, DDP) and not last:
        return train_model.no_sync()
    if is_sharded(train_model):
        train_model.set_requires_gradient_sync(last)  # FSDP2's no_sync: keep unsharded grads until the last
    return contextlib.nullcontext()


def make_optimizer(model, lr, weight_decay, device):
    """AdamW over `model`'s parameters (after wrapping: FSDP's are the shards): fused (one kernel for every
    parameter) on CUDA and on the CPU, where it takes a third of foreach's time for the tiny DiT's 72 tensors
    (~2 ms against ~6 ms a step on 2 cores); foreach for FSDP's sharded parameters on the CPU."""
    fast = {"foreach": True} if device.type == "cpu" and is_sharded(model) else {"fused": True}
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, **fast)


# ----------------------------------------------------------------------------------------------------------
# Full state dicts: one checkpoint format for one process, DDP and FSDP
# ----------------------------------------------------------------------------------------------------------

def is_sharded(module):
    """Whether shard() made `module` an FSDPModule. A process that never imported FSDP has sharded nothing."""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    return fsdp is not None and isinstance(module, fsdp.FSDPModule)


def _full_state():
    """torch.distributed.checkpoint's state-dict helpers (imported with FSDP, see shard) and the options that
    gather the full state on rank 0, on the CPU."""
    from torch.distributed.checkpoint import state_dict

    return state_dict, state_dict.StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state_dict(module):
    """The module's full state dict (a collective under FSDP: every rank calls it; rank 0 gets the tensors)."""
    if is_sharded(module):
        helpers, full = _full_state()
        return helpers.get_model_state_dict(module, options=full)
    return module.state_dict()


def optimizer_state_dict(model, opt):
    """torch.optim's state dict (state keyed by parameter index), gathered on rank 0 under FSDP."""
    if not is_sharded(model):
        return opt.state_dict()
    helpers, full = _full_state()
    by_name = helpers.get_optimizer_state_dict(model, opt, options=full)  # {"state": {fqn: ...}, "param_groups"}
    if not by_name:  # other ranks get nothing (cpu_offload + full_state_dict)
        return {}
    index = {name: i for i, (name, _) in enumerate(model.named_parameters())}
    groups = [{**g, "params": [index[name] for name in g["params"]]} for g in by_name["param_groups"]]
    return {"state": {index[name]: s for name, s in by_name["state"].items()}, "param_groups": groups}


def load_optimizer_state_dict(model, opt, state):
    """Load torch.optim's state dict (from any run) into `opt`; under FSDP each rank keeps its shards."""
    if not is_sharded(model):
        opt.load_state_dict(state)
        return
    names = [name for name, _ in model.named_parameters()]
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]
    by_name = {"state": {names[i]: s for i, s in state["state"].items()}, "param_groups": groups}
    helpers, _ = _full_state()
    helpers.set_optimizer_state_dict(model, opt, by_name, options=helpers.StateDictOptions(full_state_dict=True))


def to_device(tensors, device):
    """{name: tensor} on `device`. On CUDA through pinned memory, non_blocking: a plain copy from pageable
    memory waits for every kernel already queued (a host sync each step); this one does not."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in tensors.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in tensors.items()}


def evaluation_copy(module, env):
    """The module rank 0 evaluates: `module` itself, or under FSDP an unsharded copy on rank 0's device (a
    collective: every rank calls it; the others get None)."""
    if not is_sharded(module):
        return module
    state = full_state_dict(module)
    if not env.master:
        return None
    full = architecture(module.config)
    full.load_state_dict(state)
    return full.to(env.device)
