"""Where code runs: the device (``--device auto|cpu|cuda[:N]``) and, under torchrun, this process's rank.

Only rank 0 writes files (see ``tickets.runs``); every rank computes.
"""

from __future__ import annotations

import torch

from tickets.errors import TicketsError


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU."""
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
