"""Tickets where people already work: any ``nn.Module`` / ``transformers`` model, the Hugging Face ``Trainer``, the
Hub.

* :func:`apply_ticket` (here, no ``transformers`` import): put a ticket on a model, in place.
* ``tickets.integrations.hf.TicketCallback``: a ``transformers.TrainerCallback`` that keeps the pruned weights at
  exactly zero while ``Trainer.train()`` fine-tunes.
* ``tickets.integrations.hub``: ``Ticket.save_pretrained`` / ``from_pretrained`` / ``push_to_hub``.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from tickets.errors import TicketsError
from tickets.masks import Mask
from tickets.ticket import Ticket, fit_mask, load_ticket

__all__ = ["apply_ticket", "as_ticket", "fit_mask", "model_heads"]


def as_ticket(ticket: Ticket | Mask | str | os.PathLike) -> Ticket:
    """A Ticket from a Ticket, a Mask, or a ticket file path (any format ``load_ticket`` reads)."""
    if isinstance(ticket, Ticket):
        return ticket
    if isinstance(ticket, Mask):
        return Ticket(ticket, {})
    if isinstance(ticket, (str, os.PathLike)):
        return load_ticket(ticket)
    raise TicketsError(f"expected a Ticket, a Mask or a ticket file path, got {type(ticket).__name__}: pass "
                       "tickets.load_ticket(PATH) or the path")


def model_heads(model: nn.Module) -> list[str]:
    """The task-head submodules of ``model`` (never pruned; rebuilt per task):

    * ``tickets``' own text model (``HFTextModel``): its ``head_names``;
    * a ``transformers`` task model (``BertForSequenceClassification`` …): every child that owns parameters except
      the base model (``model.base_model_prefix``): ``["classifier"]``, ``["cls"]``, ``["lm_head"]``;
    * a ``transformers`` base model or any other module: none.
    """
    names = getattr(model, "head_names", None)
    if isinstance(names, (list, tuple)):
        return list(names)
    prefix = getattr(model, "base_model_prefix", None)
    if isinstance(prefix, str) and prefix and isinstance(getattr(model, prefix, None), nn.Module):
        return [n for n, child in model.named_children()
                if n != prefix and any(True for _ in child.parameters())]
    return []


def apply_ticket(model: nn.Module, ticket: Ticket | Mask | str | os.PathLike, *, head: Any = None) -> Mask:
    """Zero ``model``'s pruned weights in place and return the mask as fitted to ``model``.

    ``model``: any ``nn.Module`` — a ``transformers.PreTrainedModel`` (base or task model), ``tickets``'
    ``HFTextModel``, a CNN. ``ticket``: a Ticket, a Mask or a ticket file (ours, PyTorch-prune, open_lth, NNI).
    Names are matched through ``tickets.statedict.match_keys(subset=True)`` (``Ticket.fit``), so a ticket drawn on
    ``BertModel`` (``encoder.layer.0…``) applies to ``BertForSequenceClassification`` (``bert.encoder.layer.0…``) and
    back, and ``module.`` / ``model.`` prefixes resolve; a notice on the ``tickets`` logger says which renaming was
    used. Entries for the task head (``head``; default :func:`model_heads`) are ignored with a notice.

    To keep the weights pruned while training, mask the gradients and re-apply the returned mask after every
    optimizer step (``Mask.mask_grads_`` / ``Mask.apply_``), or use ``tickets.integrations.hf.TicketCallback`` with
    ``transformers.Trainer``. TicketsError (one line) when the ticket does not fit the model.
    """
    t = as_ticket(ticket)
    mask = t.fit(model, head=model_heads(model) if head is None else head)
    mask.apply_(model)
    return mask
