"""The training loop, ticket drawing and transfer, end to end on scikit-learn digits (fast, no files)."""

import json

import pytest
import torch

from tickets.config import FindConfig, ScheduleConfig, TrainConfig, TransferConfig
from tickets.verbs.find import find_tickets
from tickets.masks import Mask
from tickets.verbs.prepare import prepare
from tickets.pruning import random_prune
from tickets.runs import RunDir, read_json
from tickets.tasks.base import DataConfig
from tickets.ticket import load_ticket
from tickets.training.callbacks import Callback
from tickets.training.loop import fine_tune
from tickets.runtime import resolve_device
from tickets.verbs.transfer import transfer

FAST = TrainConfig(epochs=2, batch_size=64, optimizer="sgd", lr=0.05, lr_schedule="cosine")
DATA = DataConfig(train_size=400)


def find_cfg(method="imp", **kw):
    kw.setdefault("schedule", ScheduleConfig(kind="explicit", sparsities=[0.2, 0.36, 0.488]))
    return FindConfig(model="small-cnn", task="digits-5-9", method=method, train=FAST, data=DATA, **kw)


def kept_weights_changed_pruned_zero(model, mask, before):
    for name, m in mask.items():
        w = dict(model.named_parameters())[name].detach()
        assert torch.all(w[~m] == 0), f"{name}: a pruned weight is non-zero"
        assert not torch.equal(w[m], before[name][m]), f"{name}: kept weights did not train"


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_pruned_weights_stay_exactly_zero(optimizer):
    p = prepare("small-cnn", "digits-5-9", data=DATA)
    mask = random_prune(Mask.ones_like(p.model, p.names), 0.8, generator=torch.Generator().manual_seed(0))
    before = {n: t.clone() for n, t in p.model.state_dict().items()}
    cfg = TrainConfig(epochs=1, batch_size=64, optimizer=optimizer, lr=0.05, weight_decay=0.01,
                      lr_schedule="constant")
    fine_tune(p.model, p.task, cfg, mask=mask, device="cpu", progress=False)
    kept_weights_changed_pruned_zero(p.model, mask, before)


def test_fine_tune_is_deterministic():
    states = []
    for _ in range(2):
        p = prepare("small-cnn", "digits-5-9", data=DATA)
        fine_tune(p.model, p.task, FAST, device="cpu", seed=3, progress=False)
        states.append(p.model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_imp_levels_exact_nested_and_rerun_skips(tmp_path):
    res = find_tickets(find_cfg(), out=tmp_path, device="cpu", progress=False)
    assert [r["level"] for r in res.levels] == [0, 1, 2, 3]
    masks = [res.ticket(i).mask for i in range(4)]
    total = masks[0].num_total
    for m, target in zip(masks, [0.0, 0.2, 0.36, 0.488]):
        assert m.num_pruned == round(target * total)
    for a, b in zip(masks[1:], masks[2:]):  # IMP only removes weights: masks are nested
        assert torch.all(torch.cat([(b[n] & ~a[n]).flatten() for n in a.names]) == 0)
    meta = res.ticket(2).meta
    assert (meta["method"], meta["level"], meta["weights"], meta["source_task"]) == ("imp", 2, "theta0", "digits-5-9")
    n_events = len(RunDir(tmp_path, "find", read_json(res.path / "summary.json")["config"]).events())
    again = find_tickets(find_cfg(), out=tmp_path, device="cpu", progress=False)
    assert again.path == res.path and again.levels == res.levels
    events = RunDir(tmp_path, "find", read_json(res.path / "summary.json")["config"]).events()
    assert not any(e["event"] == "level_start" for e in events[n_events:])


def test_killed_run_resumes_bit_for_bit(tmp_path, monkeypatch):
    clean = find_tickets(find_cfg(), out=tmp_path / "a", device="cpu", progress=False)

    original = RunDir.save_checkpoint
    calls = {"n": 0}

    def dying_save(self, level, state):
        original(self, level, state)
        if level == 2 and state["epoch"] == 0:
            calls["n"] += 1
            raise KeyboardInterrupt  # killed after the first epoch of level 2

    monkeypatch.setattr(RunDir, "save_checkpoint", dying_save)
    with pytest.raises(KeyboardInterrupt):
        find_tickets(find_cfg(), out=tmp_path / "b", device="cpu", progress=False)
    assert calls["n"] == 1
    monkeypatch.setattr(RunDir, "save_checkpoint", original)
    resumed = find_tickets(find_cfg(), out=tmp_path / "b", device="cpu", progress=False)
    events = [e["event"] for e in RunDir(tmp_path / "b", "find", read_json(resumed.path / "summary.json")["config"]).events()]
    assert "resume" in events
    for level in range(4):
        a = (clean.path / f"level-{level:02d}" / "ticket.safetensors").read_bytes()
        b = (resumed.path / f"level-{level:02d}" / "ticket.safetensors").read_bytes()
        assert a == b, f"level {level} ticket differs after resume"
        assert clean.levels[level]["test"] == resumed.levels[level]["test"]


def test_killed_adamw_run_resumes_bit_for_bit_from_a_packed_checkpoint(tmp_path, monkeypatch):
    """Epoch checkpoints are packed (issue 11: float tensors as their non-zero entries): a level killed after its
    second epoch, with AdamW moments and pruned weights in the checkpoint, still ends bit-identical."""
    train = TrainConfig(epochs=3, batch_size=64, optimizer="adamw", lr=1e-3, lr_schedule="linear")

    def cfg():
        return FindConfig(model="small-cnn", task="digits-5-9", method="imp", train=train, data=DATA,
                          schedule=ScheduleConfig(kind="explicit", sparsities=[0.5, 0.75]))

    clean = find_tickets(cfg(), out=tmp_path / "a", device="cpu", progress=False)
    original = RunDir.save_checkpoint
    written = []

    def dying_save(self, level, state):
        original(self, level, state)
        written.append(torch.load(self.checkpoint_path(level), weights_only=True))
        if level == 2 and state["epoch"] == 1:
            raise KeyboardInterrupt  # killed after the second epoch of level 2

    monkeypatch.setattr(RunDir, "save_checkpoint", dying_save)
    with pytest.raises(KeyboardInterrupt):
        find_tickets(cfg(), out=tmp_path / "b", device="cpu", progress=False)
    assert written and all(c["format"] == 2 for c in written)
    assert any(isinstance(v, dict) for c in written for v in c["model"].values())  # pruned weights packed
    monkeypatch.setattr(RunDir, "save_checkpoint", original)
    resumed = find_tickets(cfg(), out=tmp_path / "b", device="cpu", progress=False)
    events = [e for e in RunDir(tmp_path / "b", "find", read_json(resumed.path / "summary.json")["config"]).events()]
    assert any(e["event"] == "resume" and e.get("level") == 2 and e["epoch"] == 2 for e in events)

    def untimed(metrics):
        return {k: v for k, v in metrics.items() if k not in ("train_seconds", "examples_per_second", "history")}

    for level in range(3):
        a = (clean.path / f"level-{level:02d}" / "ticket.safetensors").read_bytes()
        b = (resumed.path / f"level-{level:02d}" / "ticket.safetensors").read_bytes()
        assert a == b, f"level {level} ticket differs after resume"
        ma, mb = (read_json(r.path / f"level-{level:02d}" / "metrics.json") for r in (clean, resumed))
        assert untimed(ma) == untimed(mb)
        assert [h["train_loss"] for h in ma["history"]] == [h["train_loss"] for h in mb["history"]]


def test_imp_ranks_the_trained_weights_not_theta0(tmp_path):
    """IMP's level-1 mask keeps the largest weights *after* level 0's fine-tune (Frankle & Carbin 2019; the BERT
    and CV tickets papers), then rewinds to θ0: the kept weights are the top ones of the trained state, which
    differs from OMP's ranking of θ0 itself."""

    class Capture(Callback):
        key = "capture"

        def __init__(self):
            self.states = []

        def on_train_end(self, state):
            self.states.append({k: v.detach().clone() for k, v in state.model.state_dict().items()})

    cap = Capture()
    res = find_tickets(find_cfg(), out=tmp_path, device="cpu", progress=False, callbacks=[cap])
    trained = cap.states[0]  # level 0: the dense fine-tune whose weights level 1 is drawn from
    mask = res.ticket(1).mask
    kept = torch.cat([trained[n].abs()[mask[n]] for n in mask.names])
    pruned = torch.cat([trained[n].abs()[~mask[n]] for n in mask.names])
    assert kept.min() >= pruned.max()
    p = prepare("small-cnn", "digits-5-9", data=DATA)
    by_theta0 = torch.cat([p.theta0[n].abs()[mask[n]] for n in mask.names])
    assert by_theta0.min() < torch.cat([p.theta0[n].abs()[~mask[n]] for n in mask.names]).max()  # not θ0's ranking


def test_omp_keeps_the_largest_theta0(tmp_path):
    res = find_tickets(find_cfg("omp"), out=tmp_path, device="cpu", progress=False)
    p = prepare("small-cnn", "digits-5-9", data=DATA)
    mask = res.ticket(1).mask
    kept = torch.cat([p.theta0[n].abs()[mask[n]] for n in mask.names])
    pruned = torch.cat([p.theta0[n].abs()[~mask[n]] for n in mask.names])
    assert kept.min() >= pruned.max()
    assert [round(r["target_sparsity"], 3) for r in res.levels] == [0.2, 0.36, 0.488]


def test_reverse_prunes_the_largest_first(tmp_path):
    res = find_tickets(find_cfg("reverse"), out=tmp_path, device="cpu", progress=False)
    p = prepare("small-cnn", "digits-5-9", data=DATA)
    mask = res.ticket(0).mask
    kept = torch.cat([p.theta0[n].abs()[mask[n]] for n in mask.names])
    pruned = torch.cat([p.theta0[n].abs()[~mask[n]] for n in mask.names])
    assert kept.max() <= pruned.min()


def test_random_and_reinit_baselines(tmp_path):
    rnd = find_tickets(find_cfg("random"), out=tmp_path, device="cpu", progress=False)
    imp = find_tickets(find_cfg("imp"), out=tmp_path, device="cpu", progress=False)
    reinit = find_tickets(find_cfg("reinit"), out=tmp_path, device="cpu", progress=False)
    for i in range(3):
        assert reinit.ticket(i).mask.equal(imp.ticket(i + 1).mask)  # same masks as IMP …
        assert reinit.ticket(i).meta["weights"].startswith("reinit")  # … other weights
        assert rnd.ticket(i).mask.num_pruned == imp.ticket(i + 1).mask.num_pruned
        assert not rnd.ticket(i).mask.equal(imp.ticket(i + 1).mask)


def test_rewind_to_step_k_carries_weights(tmp_path):
    res = find_tickets(find_cfg(rewind="step:3"), out=tmp_path, device="cpu", progress=False)
    t = res.ticket(2)
    assert t.meta["weights"] == "rewind:step:3" and t.weights is not None
    assert (res.path / "rewind.safetensors").exists()
    p = prepare("small-cnn", "digits-5-9", data=DATA)
    name = t.mask.names[0]
    assert not torch.equal(t.weights[name], p.theta0[name])  # step-3 weights, not θ0


def test_transfer_dense_ticket_reverse_and_resume(tmp_path):
    res = find_tickets(find_cfg(), out=tmp_path, device="cpu", progress=False)
    ticket_path = res.levels[3]["ticket"]
    base = dict(model="small-cnn", task="digits-0-4", train=FAST, data=DATA)
    dense = transfer(TransferConfig(**base), out=tmp_path, device="cpu", progress=False)
    assert dense.metrics["sparsity"] == 0.0 and 0.0 <= dense.score <= 1.0
    sparse = transfer(TransferConfig(ticket=ticket_path, save_weights=True, **base), out=tmp_path, device="cpu",
                      progress=False)
    assert sparse.metrics["sparsity"] == pytest.approx(load_ticket(ticket_path).mask.sparsity)
    assert sparse.path != dense.path
    from safetensors.torch import load_file

    weights = load_file(str(sparse.path / "model.safetensors"))
    mask = load_ticket(ticket_path).mask
    assert all(torch.all(weights[n][~mask[n]] == 0) for n in mask.names)
    rev = transfer(TransferConfig(ticket=ticket_path, reverse=True, **base), out=tmp_path, device="cpu",
                   progress=False)
    assert rev.metrics["sparsity"] == pytest.approx(1 - mask.sparsity)
    again = transfer(TransferConfig(ticket=ticket_path, save_weights=True, **base), out=tmp_path, device="cpu",
                     progress=False)
    assert again.metrics == sparse.metrics  # finished run reused by its hash


def test_device_auto_is_cpu_here():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


class _StepLog(Callback):
    """Per fine-tune: the (step, learning rate, batch fingerprint) of every optimizer step."""

    key = "steplog"

    def __init__(self):
        self.runs, self._fp = [], None

    def on_train_begin(self, state):
        self.runs.append([])

    def on_batch(self, state, batch):
        self._fp = float(batch["x"].sum())
        return batch

    def after_optimizer_step(self, state):
        self.runs[-1].append((state.step, state.optimizer.param_groups[0]["lr"], self._fp))


def test_rewind_to_step_k_resumes_the_schedule_at_step_k(tmp_path):
    """Rewinding to step K (Frankle et al. 2020; open_lth): later levels train steps K+1..T of the dense run's
    schedule — same learning rates, same batches — not T steps restarted from step 0."""
    log = _StepLog()
    cfg = find_cfg(rewind="step:3")
    res = find_tickets(cfg, out=tmp_path, device="cpu", progress=False, callbacks=[log])
    dense, level1 = log.runs[0], log.runs[1]
    total = len(dense)
    assert [s for s, _, _ in level1] == list(range(4, total + 1))  # steps K+1..T
    assert [lr for _, lr, _ in level1] == [lr for _, lr, _ in dense[3:]]  # the schedule continues from K
    assert [fp for _, _, fp in level1] == [fp for _, _, fp in dense[3:]]  # and so does the data order
    meta = res.ticket(1).meta
    assert meta["rewind"]["step"] == 3 and "fresh optimizer" in meta["rewind"]["optimizer_state"]
    m = json.loads((res.path / "level-01" / "metrics.json").read_text())
    assert m["start_step"] == 3 and m["steps"] == total


def test_imp_keeps_tensors_the_task_never_uses(tmp_path, caplog):
    """A prunable tensor that gets no gradient (a pooler under an MLM head; here a conv outside the forward path)
    is not pruned by its raw magnitude: IMP keeps its mask and says so."""
    import logging

    from torch import nn

    from tickets.models import from_module
    from tickets.tasks import Task

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.idle = nn.Conv2d(1, 8, 3, padding=1)  # never called: no gradient
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(self.conv(x).relu().mean((2, 3)))

    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(120, 1, 8, 8, generator=gen), torch.randint(0, 3, (120,), generator=gen)
    task = Task.from_tensors("toy", x[:90], y[:90], x[90:], y[90:])
    cfg = FindConfig(model="net", task="toy", prunable="all", schedule=ScheduleConfig(kind="explicit",
                     sparsities=[0.3, 0.5]), train=TrainConfig(epochs=1, batch_size=32, optimizer="sgd", lr=0.05))
    with caplog.at_level(logging.WARNING, logger="tickets"):
        res = find_tickets(cfg, out=tmp_path, device="cpu", progress=False,
                           model=from_module(Net(), head="fc"), task=task)
    for level in (1, 2):
        mask = res.ticket(level).mask
        assert bool(mask["idle.weight"].all())  # kept whole although its |θ0| is as small as any
        assert mask.sparsity == round(res.levels[level]["target_sparsity"] * mask.num_total) / mask.num_total
    assert any("got no gradient" in r.getMessage() and "idle.weight" in r.getMessage() for r in caplog.records)


def test_transferring_a_ticket_to_its_own_task_reproduces_the_find_level(tmp_path):
    """A study takes seed 0 of a ticket on its own task from the find level itself; that is only sound when
    `tickets transfer` of the level's ticket, same task and seed, trains exactly the same (start weights, head,
    data order, dropout, schedule): the same losses and test metrics, bit for bit."""
    res = find_tickets(find_cfg(), out=tmp_path, device="cpu", progress=False)
    for level in (1, 3):
        found = read_json(res.path / f"level-{level:02d}" / "metrics.json")
        t = transfer(TransferConfig(model="small-cnn", task="digits-5-9", ticket=str(res.path / f"level-{level:02d}"
                                                                                    / "ticket.safetensors"),
                                    train=FAST, data=DATA, seed=0), out=tmp_path, device="cpu", progress=False)
        moved = read_json(t.path / "level-00" / "metrics.json")
        assert [h["train_loss"] for h in moved["history"]] == [h["train_loss"] for h in found["history"]]
        assert moved["test"] == found["test"]


def test_rewind_reinit_trains_the_dense_level_from_the_pretrained_weights(tmp_path):
    """`--rewind reinit` re-initialises IMP's *survivors*; its dense level 0 trained from random weights (a
    newcomer: level 0 scored 0.09 against 0.565, and level 1's mask was not IMP's). Level 0 and level 1's mask must
    equal the θ0-rewind run's; level 2 trains the survivors from a random re-initialisation."""
    common = dict(model="small-cnn", task="digits-5-9", method="imp", schedule=ScheduleConfig(levels=2), train=FAST,
                  data=DataConfig(train_size=120, limit=60))
    base = find_tickets(FindConfig(**common), out=tmp_path, device="cpu", progress=False)
    reinit = find_tickets(FindConfig(**common, rewind="reinit"), out=tmp_path, device="cpu", progress=False)
    assert read_json(base.path / "level-00" / "metrics.json")["test"] == \
        read_json(reinit.path / "level-00" / "metrics.json")["test"]
    assert load_ticket(base.path / "level-01" / "ticket.safetensors").mask.equal(
        load_ticket(reinit.path / "level-01" / "ticket.safetensors").mask)
    assert load_ticket(reinit.path / "level-01" / "ticket.safetensors").meta["weights"].startswith("reinit")


def test_a_reinit_ticket_transfers_from_a_random_reinit_not_theta0(tmp_path):
    """A `--method reinit` ticket transferred with the default --init ticket started from θ0, so its "reinit
    baseline" run was the IMP ticket's run (same hash, same scores; a newcomer). It now runs as --init reinit."""
    common = dict(model="small-cnn", task="digits-5-9", schedule=ScheduleConfig(levels=1), train=FAST,
                  data=DataConfig(train_size=120, limit=60))
    imp = find_tickets(FindConfig(**common, method="imp"), out=tmp_path, device="cpu", progress=False)
    rei = find_tickets(FindConfig(**common, method="reinit"), out=tmp_path, device="cpu", progress=False)
    rei_ticket = sorted(rei.path.glob("level-*/ticket.safetensors"))[0]
    assert load_ticket(rei_ticket).meta["weights"].startswith("reinit")
    tcfg = dict(task="digits-0-4", train=FAST, data=DataConfig(train_size=120, limit=60))
    as_default = transfer(TransferConfig(ticket=str(rei_ticket), **tcfg), out=tmp_path, device="cpu", progress=False)
    explicit = transfer(TransferConfig(ticket=str(rei_ticket), init="reinit", **tcfg), out=tmp_path, device="cpu",
                        progress=False)
    from_imp = transfer(TransferConfig(ticket=str(imp.path / "level-01" / "ticket.safetensors"), **tcfg),
                        out=tmp_path, device="cpu", progress=False)
    assert as_default.path == explicit.path != from_imp.path
    assert "init: reinit" in (as_default.path / "config.yaml").read_text()
