"""torchrun integration: process group, device per rank, DDP or FSDP wrapping, the few
collectives the loop needs, and rank-0-only printing.

Launched without torchrun (no WORLD_SIZE in the environment) everything here is a no-op for a
single process. Every rank computes the same batch list and takes its own shard of it
(DurationBucketSampler), so the data is disjoint across ranks.

Two strategies (``distributed.strategy``):
- ``ddp``: every rank holds the whole model; gradients are averaged in backward.
- ``fsdp``: torch.distributed.fsdp's fully_shard (FSDP2) on every residual block and on the
  whole: parameters, gradients and AdamW's moments are split between the ranks (about 1/N of
  the 16 bytes per parameter each), gathered block by block for forward and backward. Rank 0
  keeps an unsharded copy for validation and checkpoints, refreshed from the shards when one is
  due: a model too big to *train* on one device (weights, gradients and two moments) still fits
  for inference. Checkpoints hold full (unsharded) tensors, so a run resumes on any world size.
"""
from __future__ import annotations

import copy
import os
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as td

from .config import TrainConfig

FULL_OPTIMIZER_STATE = "full_optimizer_state"  # the key of FSDP's gathered optimiser state


@dataclass
class Context:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _device(config: TrainConfig, local_rank: int) -> torch.device:
    name = config.run.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("run.device is cuda but no CUDA device is available")
        torch.cuda.set_device(device)
    return device


def setup(config: TrainConfig) -> Context:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(config, local_rank)
    if world_size > 1 and not td.is_initialized():
        backend = config.distributed.backend
        if backend == "auto":
            backend = "nccl" if device.type == "cuda" else "gloo"
        td.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return Context(rank, world_size, local_rank, device)


def cleanup(ctx: Context) -> None:
    if ctx.distributed and td.is_initialized():
        td.barrier()
        td.destroy_process_group()


def release() -> None:
    """After train() returned or raised: destroy the process group if an error skipped cleanup()
    (no barrier: the other ranks may be gone), so that no gloo/NCCL group is left for
    interpreter teardown to destroy."""
    if td.is_available() and td.is_initialized():
        td.destroy_process_group()


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        td.barrier()


def printer(ctx: Context):
    def say(message: str) -> None:
        if ctx.is_main:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stderr)
    return say


def all_reduce_mean(values: torch.Tensor, ctx: Context, sum_last: bool = False) -> torch.Tensor:
    """Mean over ranks (the last entry summed instead with sum_last: audio seconds)."""
    if not ctx.distributed:
        return values
    values = values.to(ctx.device, copy=True)  # NCCL reduces CUDA tensors only
    td.all_reduce(values)
    if sum_last:
        values[:-1] /= ctx.world_size
    else:
        values /= ctx.world_size
    return values.cpu()


def any_flag(flag: bool, ctx: Context) -> bool:
    """True on every rank if it is True on any rank."""
    if not ctx.distributed:
        return bool(flag)
    value = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    td.all_reduce(value, op=td.ReduceOp.MAX)
    return bool(value.item() > 0)


def min_int(value: int, ctx: Context) -> int:
    """The smallest of every rank's value, on every rank."""
    if not ctx.distributed:
        return int(value)
    tensor = torch.tensor([int(value)], dtype=torch.int64, device=ctx.device)
    td.all_reduce(tensor, op=td.ReduceOp.MIN)
    return int(tensor.item())


def sharded(ctx: Context, config: TrainConfig) -> bool:
    return ctx.distributed and config.distributed.strategy == "fsdp"


def wrap(module: torch.nn.Module, ctx: Context, config: TrainConfig) -> tuple[torch.nn.Module, Optional[torch.nn.Module]]:
    """(the module to run forward and backward on, rank 0's unsharded copy under FSDP or None).

    DDP: gradients averaged over ranks in backward, buffers (the rotary bases among them)
    broadcast from rank 0 at every forward. FSDP: ``module`` itself is sharded in place; create
    the optimiser after this call, on the sharded parameters."""
    if not ctx.distributed:
        return module, None
    if not sharded(ctx, config):
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids), None
    from torch.distributed.fsdp import fully_shard

    copy_for_rank0 = copy.deepcopy(module) if ctx.is_main else None
    for stack in (module.model.encoder, module.model.decoder):
        for block in stack.blocks:
            fully_shard(block)
    fully_shard(module)
    return module, copy_for_rank0


def _full_state_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model(module: torch.nn.Module, copy_for_rank0: Optional[torch.nn.Module], ctx: Context,
               config: TrainConfig) -> Optional[torch.nn.Module]:
    """The whole (unsharded) training model, for validation, averaging and checkpoints: the
    module itself, or under FSDP rank 0's copy refreshed from the shards (a collective: every
    rank calls it; the others get None)."""
    if not sharded(ctx, config):
        return module
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    from .dynamic_base import rotary_bases, set_rotary_base

    state = get_model_state_dict(module, options=_full_state_options())
    if not ctx.is_main:
        return None
    copy_for_rank0.load_state_dict(state, strict=True)
    for stack, base in rotary_bases(module.model).items():  # the options follow the buffers
        set_rotary_base(copy_for_rank0.model, base, stack)
    return copy_for_rank0


def optimizer_state(module: torch.nn.Module, optimizer, ctx: Context, config: TrainConfig) -> dict:
    """The optimiser's state for a checkpoint: its own state_dict, or under FSDP the full
    (gathered, parameter-name keyed) state on rank 0 (a collective)."""
    if not sharded(ctx, config):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return {FULL_OPTIMIZER_STATE: get_optimizer_state_dict(module, optimizer, options=_full_state_options())}


def load_optimizer_state(module: torch.nn.Module, optimizer, state: dict, ctx: Context, config: TrainConfig) -> None:
    """The inverse of optimizer_state. An FSDP checkpoint's full state loads on any world size
    and strategy; a DDP or single-process one (keyed by parameter position) only without FSDP."""
    if FULL_OPTIMIZER_STATE not in state:
        if sharded(ctx, config):
            raise ValueError("cannot resume with distributed.strategy=fsdp from a checkpoint written without it")
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(module, optimizer, state[FULL_OPTIMIZER_STATE],
                             options=StateDictOptions(full_state_dict=True))


def gradient_sync(module: torch.nn.Module, enabled: bool):
    """A context in which backward does (or, between accumulated micro-batches, does not)
    reduce gradients across ranks."""
    if enabled:
        return nullcontext()
    if hasattr(module, "no_sync"):  # DDP
        return module.no_sync()
    if hasattr(module, "set_requires_gradient_sync"):  # FSDP2
        module.set_requires_gradient_sync(False)
        return _restore_gradient_sync(module)
    return nullcontext()


@contextmanager
def _restore_gradient_sync(module):
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def clip_grad_norm(parameters, max_norm: float) -> float:
    """Clip and return the total gradient norm (under FSDP a DTensor over all shards)."""
    norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


def reshard_sampler_state(state: dict, sampler) -> dict:
    """A sampler position saved at one world size, for this sampler's world size.

    The same global batches are consumed when both world sizes partition the same batch list:
    every rank had consumed k batches of its shard, i.e. k * old_world global batches, which is
    k * old / new per rank now (it must divide evenly, and neither world size may have needed
    batches split to share them out)."""
    if state["world_size"] == sampler.world_size:
        return {**state, "rank": sampler.rank}
    single = copy.copy(sampler)
    single.world_size, single.rank, single._cache = 1, 0, None  # noqa: SLF001 - the unsharded list
    n_batches = len(single._sharded_batches(state["epoch"]))  # noqa: SLF001
    consumed = state["batches_consumed"] * state["world_size"]
    if n_batches % state["world_size"] or n_batches % sampler.world_size or consumed % sampler.world_size:
        raise ValueError(f"cannot resume a run of {state['world_size']} processes on {sampler.world_size}: "
                         f"its epoch of {n_batches} batches, {consumed} of them consumed, does not divide "
                         f"evenly between both")
    return {**state, "world_size": sampler.world_size, "rank": sampler.rank,
            "batches_consumed": consumed // sampler.world_size}


@torch.no_grad()
def replica_difference(module: torch.nn.Module, ctx: Context) -> float:
    """Largest absolute difference between this rank's weights and rank 0's (0.0 when the
    replicas are identical, as DDP must keep them), maximised over ranks."""
    if not ctx.distributed:
        return 0.0
    worst = torch.zeros(1, dtype=torch.float64, device=ctx.device)
    for tensor in module.state_dict().values():
        theirs = tensor.detach().clone()
        td.broadcast(theirs, src=0)
        if tensor.is_floating_point():
            worst = torch.maximum(worst, (tensor.double() - theirs.double()).abs().max().reshape(1))
    td.all_reduce(worst, op=td.ReduceOp.MAX)
    return float(worst)
