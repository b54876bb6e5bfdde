"""Data-parallel training inside one job: ``torchrun --nproc-per-node N -m tickets find|transfer …``.

Every rank builds the same global batch (same seeded generator), keeps its share of the rows
(``torch.tensor_split`` of the batch into ``world_size`` parts, in rank order), and scales its loss by its share of
the examples; gradients are summed over ranks (one ``all_reduce`` over a flat buffer) before the optimizer step.
The update is then the single-process update on the global batch, up to float summation order — with layers that
look at single examples (convolutions, LayerNorm); BatchNorm statistics are per rank, as in plain DDP.

Every rank holds the same mask (its checksum is compared across ranks when training starts), evaluates the
full validation and test splits (identical results on every rank) and computes the same next-level ticket; only
rank 0 writes files (``tickets.fileio``), and ranks meet at a barrier after every level (``tickets.runtime``).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import torch

from tickets.errors import TicketsError
from tickets.masks import Mask
from tickets.runtime import rank, world_size
from tickets.training.callbacks import Callback, LoopState


def init_from_environment(device: str = "auto") -> bool:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1 in the environment): gloo on CPU, NCCL on
    CUDA (each rank on ``cuda:LOCAL_RANK``). Returns True when this process is one of several ranks."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    import torch.distributed as dist

    if dist.is_initialized():
        return True
    cuda = device not in ("cpu",) and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    except Exception as exc:  # bad rendezvous settings, a dead peer
        raise TicketsError(f"could not join the torchrun process group ({type(exc).__name__}: {exc}): launch with "
                           "`torchrun --nproc-per-node N -m tickets ...`") from None
    return True


def mask_checksum(mask: Mask | None) -> str:
    """sha256 over the mask's names, shapes and kept positions (rank-independent)."""
    h = hashlib.sha256()
    if mask is not None:
        for name in sorted(mask.names):
            t = mask[name].detach().cpu().contiguous()
            h.update(name.encode() + str(tuple(t.shape)).encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()


def check_same_mask(mask: Mask | None, where: str) -> None:
    """TicketsError unless every rank holds the same mask (compared by checksum)."""
    if world_size() <= 1:
        return
    import torch.distributed as dist

    mine = mask_checksum(mask)
    every: list[Any] = [None] * world_size()
    dist.all_gather_object(every, mine)
    if len(set(every)) != 1:
        raise TicketsError(f"the ranks hold different masks {where} (checksums {', '.join(c[:8] for c in every)}): "
                           "every rank must read the same run directory (a shared file system)")


class DistributedCallback(Callback):
    """Shard each global batch over the ranks and sum the gradients (see the module docstring)."""

    key = "distributed"

    def __init__(self, mask: Mask | None = None):
        self.mask = mask
        self.world, self.rank = world_size(), rank()

    def on_train_begin(self, state: LoopState) -> None:
        check_same_mask(self.mask, f"at the start of {state.desc}")

    def on_batch(self, state: LoopState, batch: dict) -> dict:
        n = int(next(iter(batch.values())).shape[0])
        rows = torch.tensor_split(torch.arange(n), self.world)[self.rank]
        state.loss_weight = len(rows) / n  # this rank's share of the global batch's mean loss
        return {k: v[rows.to(v.device)] if torch.is_tensor(v) and v.dim() and v.shape[0] == n else v
                for k, v in batch.items()}

    def before_optimizer_step(self, state: LoopState) -> None:
        import torch.distributed as dist

        grads = [p.grad for p in state.model.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def reduce_loss(self, value: float) -> float:
        """The global batch's mean loss from each rank's share of it."""
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item())
