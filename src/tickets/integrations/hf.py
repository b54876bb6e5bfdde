"""Fine-tune a ticket with the Hugging Face ``Trainer``: :class:`TicketCallback` and :func:`apply_ticket`.

::

    from transformers import Trainer, TrainingArguments
    from tickets.integrations.hf import TicketCallback

    trainer = Trainer(model=model, args=TrainingArguments("out", weight_decay=0.01), train_dataset=train,
                      callbacks=[TicketCallback("ticket.safetensors")])
    trainer.train()          # every pruned weight is exactly 0 afterwards, whatever the optimizer

Where the mask acts in ``Trainer``'s step (transformers 5: ``backward`` → gradient clipping →
``on_pre_optimizer_step`` → ``optimizer.step()`` → ``on_optimizer_step`` → scheduler → ``zero_grad`` →
``on_step_end``):

* ``on_train_begin``: the mask is fitted to the model (names through ``Ticket.fit``: ``bert.`` / ``module.``
  prefixes resolve, head entries are ignored), the pruned weights are zeroed, and a gradient hook is put on every
  masked parameter so its gradient is masked as it is computed — gradient clipping then sees the ticket's own
  gradient norm, as in ``tickets``' training loop (which masks before clipping);
* ``on_pre_optimizer_step``: the gradients are masked again (for engines that bypass tensor hooks);
* ``on_optimizer_step``: the mask is re-applied to the weights, so neither weight decay nor momentum (AdamW, SGD)
  can revive a pruned weight, even by rounding;
* ``on_train_end``: the mask is re-applied once more and the hooks are removed.

Needs ``transformers`` (and ``accelerate``, which ``Trainer`` needs): ``pip install 'pretrained-tickets[hf]'``.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from tickets.errors import TicketsError
from tickets.integrations import apply_ticket, as_ticket, model_heads
from tickets.log import get_logger
from tickets.masks import Mask
from tickets.ticket import Ticket

try:
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover - depends on the environment
    raise TicketsError("TicketCallback needs transformers: pip install 'pretrained-tickets[hf]'") from None

__all__ = ["TicketCallback", "apply_ticket"]

logger = get_logger(__name__)


class TicketCallback(TrainerCallback):
    """Keep a ticket's pruned weights at exactly zero while ``transformers.Trainer`` trains (see the module doc).

    ``ticket``: a Ticket, a Mask or a ticket file path (any format ``load_ticket`` reads). ``head``: the task-head
    submodules whose mask entries are ignored (default: ``tickets.integrations.model_heads(model)``). After
    training, ``callback.mask`` is the mask as fitted to the model.
    """

    def __init__(self, ticket: Ticket | Mask | str | os.PathLike, *, head: Any = None):
        self.ticket = as_ticket(ticket)
        self.head = head
        self.mask: Mask | None = None
        self._hooks: list[Any] = []
        self._params: dict[str, torch.nn.Parameter] = {}

    # -- set-up ------------------------------------------------------------------------------------------------

    def _attach(self, model: torch.nn.Module) -> None:
        self._detach()
        mask = self.ticket.fit(model, head=model_heads(model) if self.head is None else self.head)
        params = dict(model.named_parameters())
        self.mask = Mask({n: t.to(params[n].device) for n, t in mask.items()})
        self._params = {n: params[n] for n in self.mask.names}
        self.mask.apply_(model)
        for name, p in self._params.items():
            pruned = ~self.mask[name]
            self._hooks.append(p.register_hook(lambda grad, pruned=pruned: grad.masked_fill(pruned, 0)))
        logger.info("TicketCallback: %d tensors masked, sparsity %.4f over them", len(self.mask), self.mask.sparsity)

    def _detach(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def _model(self, kwargs: dict) -> torch.nn.Module:
        model = kwargs.get("model")
        if model is None:
            raise TicketsError("TicketCallback got no model from the Trainer: pass it in Trainer(model=...)")
        return model

    def _reapply(self, model: torch.nn.Module) -> None:
        if self.mask is None:
            self._attach(model)
            return
        with torch.no_grad():
            for name, p in self._params.items():
                p.masked_fill_(~self.mask[name], 0)

    # -- TrainerCallback events --------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        self._attach(self._model(kwargs))

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.mask is None:
            self._attach(self._model(kwargs))
        with torch.no_grad():
            for name, p in self._params.items():
                if p.grad is not None:
                    p.grad.masked_fill_(~self.mask[name], 0)

    def on_optimizer_step(self, args, state, control, **kwargs):
        self._reapply(self._model(kwargs))

    def on_train_end(self, args, state, control, **kwargs):
        self._reapply(self._model(kwargs))
        self._detach()
