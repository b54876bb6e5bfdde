"""Where code runs: the device (``--device auto|cpu|cuda[:N]``) and, under torchrun, this process's rank.

Only rank 0 writes files: ``tickets.fileio.atomic_write`` (and so every JSON, ticket, checkpoint and config file)
and ``RunDir.log`` do nothing on ranks > 0; every rank computes. The rank functions read ``torch.distributed``
only when a process group is initialised (``torch.distributed.init_process_group``, as torchrun-launched code
does); otherwise the process is a single process of rank 0 in a world of 1. They never import torch themselves,
so the light modules that ask (``tickets.fileio``) stay light: no process group can exist before
``torch.distributed`` is imported.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from tickets.errors import TicketsError

if TYPE_CHECKING:  # pragma: no cover
    import torch


def resolve_device(name: "str | torch.device | None" = "auto") -> "torch.device":
    """``auto``: CUDA when present, else CPU. TicketsError for an unknown name or CUDA asked for but absent."""
    import torch

    if isinstance(name, torch.device):
        return name
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TicketsError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TicketsError(f"device {name!r} asked for but CUDA is not available: use --device cpu or auto")
    return device


def _group():
    """``torch.distributed`` when a default process group is initialised in this process, else None."""
    dist = sys.modules.get("torch.distributed")
    if dist is None:
        return None
    try:
        return dist if dist.is_available() and dist.is_initialized() else None
    except Exception:  # pragma: no cover - a half-imported torch during interpreter shutdown
        return None


def rank() -> int:
    """This process's rank in the default process group (0 … world_size() - 1); 0 when none is initialised."""
    dist = _group()
    return dist.get_rank() if dist is not None else 0


def world_size() -> int:
    """Processes in the default process group; 1 when none is initialised."""
    dist = _group()
    return dist.get_world_size() if dist is not None else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the one process that writes files."""
    return rank() == 0


def barrier() -> None:
    """Wait until every rank reaches this point (``torch.distributed.barrier``); returns at once in a single
    process. Use it after rank 0 wrote a file the other ranks are about to read."""
    dist = _group()
    if dist is not None and dist.get_world_size() > 1:
        dist.barrier()
