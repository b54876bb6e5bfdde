"""Epoch-checkpoint bytes of a real MiniLM-L6 level on SST-2, in three formats, and a bit-exact resume check.

    python benchmarks/checkpoint_bytes.py [--train-size 640] [--epochs 3] [--sparsity 0.5] [--no-verify]

Trains a level (the project's loop with MiniLM's defaults: fused AdamW, lr 2e-5 linear, no weight decay,
batch 32, 1 thread) twice, dense and under a
magnitude mask of ``--sparsity`` over the ``bert`` prunable set, and serialises every epoch checkpoint with
``torch.save`` into memory in three formats:

* ``always-best``: model + AdamW state + a copy of the best state in every checkpoint, written after every
  epoch (the format the issue measured at 347 MiB per epoch);
* ``plain``: model + AdamW state, the best state only when it is not the current epoch, no checkpoint after the
  last epoch (the loop before packing);
* ``packed``: the same content with every float tensor stored as its non-zero entries when smaller
  (``training/callbacks.py``: pruned weights and the AdamW moments of pruned weights and of untouched embedding
  rows cost a bit each).

Bytes per epoch = all checkpoint bytes of the level / epochs. Packed sizes depend on how much of the embedding
matrix the training set touches (rows no batch uses keep zero AdamW moments): the script also prints the share of the vocabulary the training subset and the full SST-2 training set use. With ``--verify``
(default) the packed checkpoint after epoch 0 is resumed in a fresh model and the level must end with the same
weights, bit for bit, as the uninterrupted run.
"""

from __future__ import annotations

import copy
import io
import time

import numpy as np
import torch

from _timing import cpu_seconds, mib, parser, setup


def nbytes(obj) -> int:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getbuffer().nbytes


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, rounds=1)
    ap.add_argument("--train-size", type=int, default=640)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--no-verify", action="store_true")
    args = ap.parse_args(argv)
    setup(args)
    from tickets.config import TrainConfig
    from tickets.masks import Mask
    from tickets.pruning import magnitude_prune
    from tickets.tasks import DataConfig
    from tickets.training.callbacks import Callback, CheckpointCallback, pack_checkpoint, unpack_checkpoint
    from tickets.training.loop import fine_tune
    from tickets.verbs.prepare import prepare

    p = prepare("minilm-l6", "glue/sst2", data=DataConfig(train_size=args.train_size), data_root=args.data_root)
    full = prepare("minilm-l6", "glue/sst2", data=DataConfig(), data_root=args.data_root).task.train
    vocab = next(v for k, v in p.model.state_dict().items() if k.endswith("word_embeddings.weight")).shape[0]

    def used(split) -> float:
        off, ids = split.store["offsets"], split.store["ids"]
        rows = [ids[off[r]: off[r + 1]] for r in split.rows]
        return len(np.unique(np.concatenate(rows))) / vocab

    print(f"minilm-l6 on glue/sst2: {len(p.task.train)} training sentences use {used(p.task.train):.1%} of the "
          f"{vocab}-token vocabulary; the full training set ({len(full)}) uses {used(full):.1%}")
    cfg = TrainConfig(epochs=args.epochs)  # the transformer family's defaults: fused AdamW, lr 2e-5, batch 32

    class Record(Callback):
        def __init__(self):
            self.rows = []

        def on_epoch_end(self, state, record):  # runs before the CheckpointCallback (listed first)
            plain = state.checkpoint()
            plain["best_state"] = state.best_state  # always-best: a second copy every epoch
            self.rows.append({"always-best": nbytes(plain)})

    for label, sparsity in (("dense", 0.0), (f"{sparsity_label(args.sparsity)} sparse", args.sparsity)):
        p.load_weights(p.theta0)
        mask = None
        if sparsity:
            ones = Mask.ones_like(p.model, p.names)
            mask = magnitude_prune({n: p.theta0[n] for n in p.names}, ones, sparsity)
        record, saved = Record(), []
        pack_cpu = []

        def save(ckpt, saved=saved, record=record, pack_cpu=pack_cpu):
            t0 = cpu_seconds()
            plain = unpack_checkpoint(ckpt)
            repacked = pack_checkpoint(plain)
            pack_cpu.append(cpu_seconds() - t0)  # unpack + pack: an upper bound of the packing cost
            record.rows[-1]["plain"] = nbytes(plain)
            record.rows[-1]["packed"] = nbytes(repacked)
            buf = io.BytesIO()  # as RunDir.save_checkpoint / load_checkpoint: a copy, not the live tensors
            torch.save(ckpt, buf)
            buf.seek(0)
            saved.append(torch.load(buf, weights_only=True))

        t0 = cpu_seconds()
        fine_tune(p.model, p.task, cfg, mask=mask, device="cpu", seed=0, progress=False, family=p.family,
                  recipe=p.recipe, callbacks=[record, CheckpointCallback(save, [])])
        level_cpu = cpu_seconds() - t0
        final = {k: v.clone() for k, v in p.model.state_dict().items()}
        totals = {k: sum(r.get(k, 0) for r in record.rows) for k in ("always-best", "plain", "packed")}
        print(f"\n{label} level: {args.epochs} epochs, {len(saved)} checkpoints, level CPU {level_cpu:.1f} s, "
              f"checkpoint packing (unpack+pack) {sum(pack_cpu):.2f} s CPU")
        for i, r in enumerate(record.rows):
            print(f"  epoch {i}: " + ", ".join(f"{k} {mib(v)}" for k, v in r.items()))
        for k, v in totals.items():
            print(f"  {k:12s} {mib(v / args.epochs)} per epoch  ({v / totals['always-best']:.2f} of always-best)")
        if not args.no_verify and len(saved) >= 2:
            p.load_weights(p.theta0)
            start = time.perf_counter()
            fine_tune(p.model, p.task, cfg, mask=mask, device="cpu", seed=0, progress=False, family=p.family,
                      recipe=p.recipe, resume=copy.deepcopy(saved[0]))
            same = all(torch.equal(final[k], v) for k, v in p.model.state_dict().items())
            print(f"  resumed from the packed epoch-0 checkpoint: final weights bit-identical: {same} "
                  f"({time.perf_counter() - start:.0f} s)")


def sparsity_label(s: float) -> str:
    return f"{s:.0%}"


if __name__ == "__main__":
    main()
