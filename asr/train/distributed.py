"""torchrun integration: process group, device per rank, DDP wrapping, the few
collectives the loop needs, and rank-0-only printing.

Launched without torchrun (no WORLD_SIZE in the environment) everything here is a no-op for a
single process. Every rank computes the same batch list and takes its own shard of it
(DurationBucketSampler), so the data is disjoint across ranks.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as td

from .config import TrainConfig


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
    values = values.clone()
    td.all_reduce(values)
    if sum_last:
        values[:-1] /= ctx.world_size
    else:
        values /= ctx.world_size
    return values


def any_flag(flag: bool, ctx: Context) -> bool:
    """True on every rank if it is True on any rank."""
    if not ctx.distributed:
        return bool(flag)
    value = torch.tensor([1.0 if flag else 0.0])
    td.all_reduce(value, op=td.ReduceOp.MAX)
    return bool(value.item() > 0)


def wrap(module: torch.nn.Module, ctx: Context, config: TrainConfig) -> torch.nn.Module:
    """DDP under torchrun: gradients averaged over ranks in backward, buffers (the rotary
    bases among them) broadcast from rank 0 at every forward."""
    if not ctx.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def reshard_sampler_state(state: dict, sampler) -> dict:
    """A sampler position saved at one world size, for this sampler's world size.

    The same global batches are consumed when both world sizes partition the same batch list:
    every rank had consumed k batches of its shard, i.e. k * old_world global batches, which is
    k * old / new per rank now (it must divide evenly, and neither world size may have needed
    batches split to share them out)."""
    if state["world_size"] == sampler.world_size:
        return {**state, "rank": sampler.rank}
    import copy

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
    worst = torch.zeros(1, dtype=torch.float64)
    for tensor in module.state_dict().values():
        theirs = tensor.detach().clone()
        td.broadcast(theirs, src=0)
        if tensor.is_floating_point():
            worst = torch.maximum(worst, (tensor.double() - theirs.double()).abs().max().reshape(1))
    td.all_reduce(worst, op=td.ReduceOp.MAX)
    return float(worst)
