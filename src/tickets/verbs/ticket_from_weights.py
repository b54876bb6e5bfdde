"""`tickets ticket-from-weights`: a pre-sparsified checkpoint (exact zeros, no mask) → a ticket that keeps them.

Published sparse models (e.g. a 70%-sparse BERT) ship plain weights with zeros where they were pruned. Fine-tuned
densely, every zero gets a gradient and comes back. This verb reads the checkpoint, takes the prunable set
(``--prunable``, default the model's preset; heads never), and records ``weight != 0`` as the ticket's mask, so
``tickets transfer --ticket TICKET --weights FILE`` fine-tunes the same weights with the zeros held at zero.
"""

from __future__ import annotations

import os
from pathlib import Path

from tickets.errors import TicketsError
from tickets.log import get_logger
from tickets.masks import Mask, PrunableSet
from tickets.ticket import Ticket, save_ticket

logger = get_logger(__name__)


def ticket_from_weights(
    model: str,
    *,
    weights: str | os.PathLike | None = None,
    prunable: str | PrunableSet | None = None,
    out: str | os.PathLike | None = None,
    model_root: str | os.PathLike | None = None,
) -> Ticket:
    """The ticket whose pruned entries are the exact zeros of ``model``'s weights over the prunable set.

    ``weights``: the checkpoint (any layout ``tickets.statedict`` reads); default: the model's own weights (e.g.
    ``hf:<folder of a sparse BERT>``). ``prunable``: the prunable set (``PrunableSet.parse`` syntax), default the
    model's preset; task heads are never included. ``out``: where to write the ticket (``save_ticket``), if given
    (an existing directory is refused at once).
    The ticket records ``method: zeros``, the model name, the prunable set, ``weights: theta0`` and the checkpoint
    it was read from: ``theta0_weights`` (its sha256, as ``tickets find --weights`` records θ0) and
    ``source_weights`` (path and sha256). Transfer it with the same ``--weights`` so θ0 holds those zeros;
    ``tickets transfer`` warns when θ0 is another checkpoint or the shipped weights.
    A tensor with no zeros is kept dense; a checkpoint with no zeros at all gives a dense ticket (with a warning).
    """
    from tickets import __version__
    from tickets.fileio import TargetIsDirectory
    from tickets.verbs.export import load_model_weights

    if out is not None and Path(out).is_dir():  # before the model is loaded and read
        raise TargetIsDirectory(Path(out))
    spec = load_model_weights(model, weights, model_root=model_root)
    pset = prunable if isinstance(prunable, PrunableSet) else PrunableSet.parse(prunable or spec.prunable_preset)
    heads = tuple(h + "." for h in spec.head)
    names = [n for n in pset.resolve(spec.module) if not n.startswith(heads)]
    if not names:
        raise TicketsError(f"prunable set {pset.to_text()!r} selects only head tensors of {model}: choose another "
                           "--prunable")
    params = dict(spec.module.named_parameters())
    mask = Mask({n: params[n].detach().cpu() != 0 for n in names})
    report = mask.report()["prunable"]
    if mask.num_pruned == 0:
        logger.warning("no weight of the prunable set (%d tensors) is exactly zero: the ticket is dense; was the "
                       "checkpoint pruned by masking at run time instead (then pass its mask file as --ticket)?",
                       len(names))
    full = [n for n, r in report["per_tensor"].items() if r["kept"] == 0]
    if full:
        logger.warning("%d tensors are entirely zero (%s): the ticket prunes them completely", len(full),
                       ", ".join(full[:3]))
    meta = {
        "model": model,
        "prunable": pset.to_dict(),
        "method": "zeros",
        "sparsity": mask.sparsity,
        "weights": "theta0",
        "head_policy": "fresh",
        "tickets_version": __version__,
    }
    if weights is not None:
        from tickets.verbs.find import weights_identity

        identity = weights_identity(weights)  # what `tickets find --weights` records, and transfer compares with
        meta["theta0_weights"] = identity
        meta["source_weights"] = {"path": str(weights), "sha256": identity["sha256"]}
    ticket = Ticket(mask, meta)
    if out is not None:
        save_ticket(Path(out), ticket)
        logger.info("ticket from the zeros of %s: sparsity %.4f over the prunable set (%d tensors, %d weights) -> %s",
                    weights or model, mask.sparsity, len(mask), mask.num_total, out)
    return ticket
