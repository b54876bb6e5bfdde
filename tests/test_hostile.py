"""Hostile and careless input, one test (or property) per *kind* of fault: the answer is one line naming the
problem and the fix, exit 2 — never a wrong result, a traceback or a hang.

Kinds (issue "Reliability"): 1 run identity, 2 ticket integrity, 3 impossible settings, 4 untrusted structure,
5 broken run folders, 6 file-system errors, 7 liveness, 8 advice that names the real cause.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickets.cli import main
from tickets.config import FindConfig, TrainConfig
from tickets.errors import TicketsError
from tickets.hparams import from_dict
from tickets.masks import Mask
from tickets.ticket import Ticket, load_ticket, save_ticket

FAST = ["--epochs", "1", "--train-size", "200", "--batch-size", "64", "--device", "cpu", "--quiet"]
FIND = ["find", "--model", "small-cnn", "--task", "digits-5-9", "--sparsities", "0.5", "--method", "omp"]


def one_line(capsys, code, *words, rc=2):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == rc, err
    assert len(lines) == 1 and lines[0].startswith("tickets: error:"), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


# -- 1. run identity -------------------------------------------------------------------------------------------------
def _npz(root: Path, shift: int = 0) -> None:
    rng = np.random.default_rng(0)
    (root / "mnist").mkdir(parents=True, exist_ok=True)
    x = rng.integers(0, 255, (300, 28, 28, 1), dtype=np.uint8)
    y = (np.arange(300) + shift) % 10
    np.savez(root / "mnist" / "mnist.npz", x_train=x, y_train=y, x_test=x[:40], y_test=y[:40])


@pytest.mark.parametrize("verb", ["transfer", "pretrain"])  # pretrain reused its run on other data (a newcomer)
def test_same_command_on_other_data_is_refused_not_reused(tmp_path, capsys, verb):
    a, b = tmp_path / "a", tmp_path / "b"
    _npz(a)
    _npz(b, shift=3)  # same shapes, other labels
    argv = [verb, "--model", "small-cnn", "--task", "mnist", *FAST, "--out", str(tmp_path / "runs")]
    assert main([*argv, "--data-root", str(a)]) == 0
    capsys.readouterr()
    line = one_line(capsys, main([*argv, "--data-root", str(b)]), "other inputs", "--out")
    assert "mnist.npz" in line


def test_a_corrupt_inputs_record_of_finished_work_is_refused_not_rewritten(tmp_path, capsys):
    """A finished run whose inputs.json is unreadable cannot be checked against the data: refuse it (it used to be
    silently rewritten with the current inputs, so the old results came back for other data)."""
    a, b = tmp_path / "a", tmp_path / "b"
    _npz(a)
    _npz(b, shift=3)
    argv = ["transfer", "--model", "small-cnn", "--task", "mnist", *FAST, "--out", str(tmp_path / "runs")]
    assert main([*argv, "--data-root", str(a)]) == 0
    capsys.readouterr()
    (record,) = (tmp_path / "runs").glob("transfer-*/inputs.json")
    record.write_text('{"data": [')  # torn
    one_line(capsys, main([*argv, "--data-root", str(b)]), "inputs.json", "unreadable", "delete")
    assert record.read_text() == '{"data": ['  # left for the user to judge


def test_other_weights_get_their_own_run(tmp_path):
    from tickets.models import load_model

    spec = load_model("small-cnn")
    w1, w2 = tmp_path / "w1.pth", tmp_path / "w2.pth"
    torch.save(spec.module.state_dict(), w1)
    torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in spec.module.state_dict().items()}, w2)
    out = tmp_path / "runs"
    for w in (w1, w2):
        assert main([*FIND, *FAST, "--weights", str(w), "--out", str(out)]) == 0
    assert len(list(out.glob("find-*"))) == 2


# -- 2. ticket integrity ---------------------------------------------------------------------------------------------
def _ticket(tmp_path: Path) -> Path:
    assert main([*FIND, *FAST, "--out", str(tmp_path / "runs")]) == 0
    return next((tmp_path / "runs").glob("find-*/level-00/ticket.safetensors"))


def test_edited_metadata_fails_its_checksum(tmp_path, capsys, edit_header):
    ticket = _ticket(tmp_path)
    edited = edit_header(ticket, lambda m: m.update({"meta.model": json.dumps("resnet32-cifar10")}))
    capsys.readouterr()
    one_line(capsys, main(["inspect", str(edited)]), "metadata checksum")


def _small_ticket(path: Path) -> Path:
    """A ticket over small-cnn's conv1, saved without running anything."""
    from tickets.models import load_model

    weight = dict(load_model("small-cnn").module.named_parameters())["conv1.weight"]
    keep = torch.rand(weight.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    mask = Mask({"conv1.weight": keep})
    save_ticket(path, Ticket(mask, {"model": "small-cnn", "method": "omp", "sparsity": mask.sparsity}))
    return path


def test_a_deleted_metadata_checksum_is_tampering_not_a_pass(tmp_path, capsys, edit_header):
    """Deleting meta_checksum used to switch the metadata check off: an edited sparsity then showed as true."""
    ticket = _small_ticket(tmp_path / "t.safetensors")
    edited = edit_header(ticket, lambda m: (m.pop("meta_checksum"), m.update({"meta.sparsity": "0.9"})))
    one_line(capsys, main(["inspect", str(edited)]), "no meta_checksum", "edited or damaged", "re-copy")
    edited = edit_header(ticket, lambda m: m.pop("meta_checksum"))  # removing it alone is caught too
    one_line(capsys, main(["inspect", str(edited)]), "no meta_checksum")


def test_ticket_for_another_model_needs_force(tmp_path, capsys):
    from tickets.models import load_model

    spec = load_model("small-cnn")
    path = tmp_path / "t.safetensors"
    names = ["conv1.weight"]
    save_ticket(path, Ticket(Mask.ones_like(spec.module, names), {"model": "resnet20-cifar10"}))
    argv = ["transfer", "--ticket", str(path), "--model", "small-cnn", "--task", "digits-5-9", *FAST,
            "--out", str(tmp_path / "runs")]
    one_line(capsys, main(argv), "drawn for model 'resnet20-cifar10'", "--force")
    assert main([*argv, "--force"]) == 0


# -- 3. impossible settings ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags, words", [
    (["--lr", "nan"], ["lr", "finite"]),
    (["--lr", "inf"], ["lr", "finite"]),
    (["--weight-decay", "nan"], ["weight_decay"]),
    (["--lr", "-1"], ["lr", "> 0"]),
    (["--batch-size", "0"], ["batch_size", ">= 1"]),
    (["--batch-size", "-64"], ["batch_size", ">= 1"]),
    (["--limit", "0"], ["limit", ">= 1"]),
    (["--val-fraction", "0"], ["val_fraction", "(0, 1)"]),
    (["--max-steps", "0"], ["max_steps"]),
    (["--max-steps", "-1"], ["max_steps"]),
    (["--seed", str(2**40)], ["seed"]),
    (["--threads", "-1"], ["threads"]),
    (["--train-size", "1"], ["validation", "train"]),
    (["--val-size", "0"], ["val_size", "validation"]),
    (["--sparsities", "0.5,0.4"], ["increase"]),
])
def test_impossible_settings_are_one_line(flags, words, tmp_path, capsys):
    argv = [*FIND, *[f for f in FAST if f != "--quiet"], "--out", str(tmp_path / "runs"), *flags]
    one_line(capsys, main(argv), *words)
    assert not list((tmp_path / "runs").glob("find-*/level-00/DONE"))


def test_a_run_directory_as_ticket_names_the_ticket_files(tmp_path, capsys):
    """`--ticket RUN_DIR` / `inspect RUN_DIR` used to say "not found" of a directory that exists."""
    run = tmp_path / "find-0123"
    for level in (0, 1):
        _small_ticket(run / f"level-{level:02d}" / "ticket.safetensors")
    for argv in (["inspect", str(run)], ["transfer", "--ticket", str(run), "--task", "digits-0-4", *FAST,
                                         "--out", str(tmp_path / "runs")]):
        line = one_line(capsys, main(argv), "is a directory", str(run / "level-01" / "ticket.safetensors"))
        assert "not found" not in line
    assert not (tmp_path / "runs").exists()


def test_out_pointing_at_a_file(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    one_line(capsys, main([*FIND, *FAST, "--out", str(target)]), "--out")


@pytest.mark.parametrize("text, words", [
    ("out: 5\n", ["out", "string"]),
    ("device: [cpu]\n", ["device", "string"]),
    ("- a\n- b\n", ["mapping"]),
    ("seed: 1\nseed: 2\n", ["appears twice"]),
    ("train: {lr: .nan}\n", ["lr", "finite"]),
    ("bogus_key: 1\n", ["unknown key 'bogus_key'"]),
])
def test_wrong_config_files_are_one_line(text, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no --out flag: the file's own out/device values must be checked
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: small-cnn\ntask: digits-5-9\n" + text if not text.startswith("-") else text)
    one_line(capsys, main(["find", "--config", str(cfg)]), *words)
    assert not (tmp_path / "runs").exists()


def test_non_utf8_config(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"model: sm\xffall-cnn\n")
    one_line(capsys, main(["find", "--config", str(cfg)]), "UTF-8")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["epochs", "batch_size", "lr", "momentum", "weight_decay", "warmup",
                                        "max_steps", "grad_clip", "optimizer", "lr_schedule"]),
                       st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                                 st.text(max_size=5), st.booleans(), st.none(), st.lists(st.integers(), max_size=2)),
                       max_size=4))
def test_any_train_values_either_validate_or_raise_one_tickets_error(values):
    """Property: a config built from arbitrary values is either fully valid (every bound holds after the family
    defaults are filled in) or rejected with a TicketsError — never a crash, never a NaN that slips through."""
    from tickets.config import resolve_train

    try:
        cfg = from_dict(FindConfig, {"model": "m", "task": "t", "train": values}, "")
        train = resolve_train(cfg.train, "cnn")
    except TicketsError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert train.epochs >= 1 and train.batch_size >= 1 and train.lr > 0 and np.isfinite(train.lr)
    assert 0 <= train.warmup < 1 and train.weight_decay >= 0


def test_dry_run_checks_values_before_anything_runs(tmp_path, capsys):
    for text in ("train: {batch_size: 0}", "train: {lr: .nan}", "train: {max_steps: -5}", "data: {train_size: 0}",
                 "data: {train_size: 99999}"):
        exp = tmp_path / "e.yaml"
        exp.write_text(f"models: [small-cnn]\n{text}\nfind:\n  - tasks: [digits]\n")
        one_line(capsys, main(["run", str(exp), "--dry-run", "--out", str(tmp_path / "runs")]), "e.yaml:2")


# -- 4. untrusted structure ------------------------------------------------------------------------------------------
def test_yaml_alias_bomb_is_refused_quickly(tmp_path, capsys):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}]" for i in range(1, 10)]
    exp = tmp_path / "bomb.yaml"
    exp.write_text("\n".join(lines) + "\nmodels: [small-cnn]\n")
    t0 = time.perf_counter()
    one_line(capsys, main(["run", str(exp), "--dry-run"]), "aliases")
    assert time.perf_counter() - t0 < 30  # refused before anything expands (a bound, not a speed target)


@pytest.mark.parametrize("edit, words", [
    (lambda m: m.update(names=json.dumps("conv1.weight")), ["names"]),
    (lambda m: m.update(shapes=json.dumps({"conv1.weight": ["a", 2]})), ["shape"]),
    (lambda m: m.update(shapes="[" * 100000 + "]" * 100000), ["corrupt"]),
])
def test_crafted_ticket_headers(edit, words, tmp_path, capsys, edit_header):
    from tickets import ticket as ticket_module

    ticket = _ticket(tmp_path)

    def forge(meta):  # a crafted file recomputes its checksums so only the schema check can catch it
        edit(meta)
        meta["meta_checksum"] = ticket_module._meta_checksum(meta)

    edited = edit_header(ticket, forge)
    capsys.readouterr()
    one_line(capsys, main(["inspect", str(edited)]), *words)
    assert ticket_module.MAX_WEIGHTS > 0


def test_sparse_tensor_mask_in_a_torch_file(tmp_path, capsys):
    path = tmp_path / "mask.pth"
    torch.save({"conv1.weight": torch.ones(4, 4).to_sparse()}, path)
    one_line(capsys, main(["inspect", str(path)]), "dense")


# -- 5. broken run folders -------------------------------------------------------------------------------------------
def _find_run(tmp_path: Path, *extra: str) -> Path:
    assert main(["find", "--model", "small-cnn", "--task", "digits-5-9", "--sparsities", "0.5", *FAST,
                 "--out", str(tmp_path / "runs"), *extra]) == 0
    return next((tmp_path / "runs").glob("find-*"))


def test_truncated_metrics_next_to_done_is_redone_not_trusted(tmp_path, caplog):
    run = _find_run(tmp_path)
    good = json.loads((run / "level-01" / "metrics.json").read_text())
    (run / "level-01" / "metrics.json").write_text('{"level": 1, "te')
    (run / "summary.json").unlink()
    assert main(["find", "--model", "small-cnn", "--task", "digits-5-9", "--sparsities", "0.5", *FAST,
                 "--out", str(tmp_path / "runs")]) == 0
    again = json.loads((run / "level-01" / "metrics.json").read_text())
    assert again["test"] == good["test"]  # redone, bit for bit on CPU
    assert any(e.get("event") == "level_redo" for e in map(json.loads, (run / "log.jsonl").read_text().splitlines()))


def test_missing_next_ticket_retrains_the_previous_level_keeping_it(tmp_path):
    run = _find_run(tmp_path)
    ticket = (run / "level-01" / "ticket.safetensors").read_bytes()
    (run / "level-01" / "ticket.safetensors").unlink()
    (run / "level-01" / "DONE").unlink()
    assert main(["find", "--model", "small-cnn", "--task", "digits-5-9", "--sparsities", "0.5", *FAST,
                 "--out", str(tmp_path / "runs")]) == 0
    assert (run / "level-01" / "ticket.safetensors").read_bytes() == ticket  # the same ticket, drawn again
    assert (run / "level-00" / "DONE").exists()


@pytest.mark.parametrize("damage", ["missing-keys", "wrong-shape", "impossible-epoch", "nan-weights"])
def test_damaged_checkpoint_restarts_the_level(damage, tmp_path, caplog):
    from tickets import DataConfig
    from tickets.config import ScheduleConfig
    from tickets.models import load_model
    from tickets.runs import RunLayout
    from tickets.verbs.find import find_tickets

    cfg = FindConfig(model="small-cnn", task="digits-5-9", schedule=ScheduleConfig(kind="explicit", sparsities=[0.5]),
                     train=TrainConfig(epochs=3, batch_size=64), data=DataConfig(train_size=200))
    clean = find_tickets(cfg, out=tmp_path / "clean", device="cpu", progress=False)
    first = find_tickets(cfg, out=tmp_path / "runs", device="cpu", progress=False)
    layout = RunLayout(first.path)
    layout.done(1).unlink()
    layout.summary.unlink()
    weights = dict(load_model("small-cnn").module.state_dict())
    state = {"model": weights, "optimizer": {}, "epoch": 0, "step": 3, "history": [{"epoch": 0, "val": {}}],
             "best_score": 0.5, "best_epoch": 0}
    if damage == "missing-keys":
        del state["optimizer"]
    elif damage == "wrong-shape":
        state["model"] = {**weights, "conv1.weight": torch.zeros(1)}
    elif damage == "impossible-epoch":
        state["epoch"] = 99
    else:
        state["model"] = {**weights, "conv1.weight": torch.full_like(weights["conv1.weight"], float("nan"))}
    torch.save(state, layout.checkpoint(1))
    again = find_tickets(cfg, out=tmp_path / "runs", device="cpu", progress=False)
    assert again.levels[1]["test"] == clean.levels[1]["test"]  # restarted from scratch, same result
    assert any("checkpoint is unusable" in r.getMessage() for r in caplog.records)


def test_torn_log_line_is_repaired_and_stale_temporaries_removed(tmp_path):
    run = _find_run(tmp_path)
    with open(run / "log.jsonl", "a") as fh:
        fh.write('{"event": "epo')  # a write cut by kill -9
    (run / ".ticket.safetensors.abc123.tmp").write_bytes(b"half")
    (run / "level-01" / "DONE").unlink()
    (run / "summary.json").unlink()
    assert main(["find", "--model", "small-cnn", "--task", "digits-5-9", "--sparsities", "0.5", *FAST,
                 "--out", str(tmp_path / "runs")]) == 0
    lines = (run / "log.jsonl").read_text().splitlines()
    parsed = [json.loads(line) for line in lines if line != '{"event": "epo']
    assert len(parsed) == len(lines) - 1  # only the torn line is not JSON; everything after it is
    assert not list(run.glob(".*.tmp"))


def test_files_get_the_users_umask(tmp_path):
    run = _find_run(tmp_path)
    mode = (run / "level-01" / "metrics.json").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


# -- 6. file-system errors -------------------------------------------------------------------------------------------
@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_out(tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        one_line(capsys, main([*FIND, *FAST, "--out", str(out)]), str(out), "writable")
    finally:
        out.chmod(0o755)


def test_read_only_finished_run_is_read_not_written(tmp_path):
    """A finished run copied somewhere nobody may write (simulated: every write raises) is still reported."""
    run = _find_run(tmp_path)
    from tickets import fileio

    def refuse(path, write):
        raise PermissionError(13, "Permission denied", str(path))

    original = fileio.atomic_write
    fileio.atomic_write = refuse
    try:
        assert main(["find", "--model", "small-cnn", "--task", "digits-5-9", "--sparsities", "0.5", *FAST,
                     "--out", str(tmp_path / "runs")]) == 0
    finally:
        fileio.atomic_write = original
    assert run.exists()


def test_writing_a_file_onto_a_directory_names_the_directory(tmp_path, capsys):
    """The atomic writer renames a temporary file onto the target: onto a directory that failed naming the
    temporary file (`cannot write .../.x.abc.tmp (Is a directory)`); now one line names the target."""
    from safetensors.torch import save_file

    from tickets.models import load_model

    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in load_model("small-cnn").module.state_dict().items()}, str(weights))
    out = tmp_path / "out"
    out.mkdir()
    line = one_line(capsys, main(["ticket-from-weights", "--model", "small-cnn", "--weights", str(weights), "--out",
                                  str(out), "--quiet"]), f"cannot write {out}", "is a directory", "file name")
    assert ".tmp" not in line and not list(out.iterdir()) and not list(tmp_path.glob(".*.tmp"))


def test_full_disk_names_the_path(tmp_path, capsys, monkeypatch):
    import errno

    from tickets import runs

    def full(path, write):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(runs, "atomic_write_text", lambda path, text: full(path, None))
    one_line(capsys, main([*FIND, *FAST, "--out", str(tmp_path / "runs")]), "No space left", "free disk space")


def test_file_size_limit(tmp_path):
    """With a 64 KiB file-size limit (ulimit -f) the first epoch checkpoint cannot be written: one line naming the
    file and the limit, exit 2 (Python ignores SIGXFSZ, so the write fails with EFBIG)."""
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536));"
            "from tickets.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, *FIND, "--epochs", "2", "--train-size", "200", "--device",
                           "cpu", "--quiet", "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "checkpoint" in proc.stderr and "ulimit" in proc.stderr


# -- 7. liveness -----------------------------------------------------------------------------------------------------
def test_lock_of_a_killed_process_is_free_at_once(tmp_path):
    from tickets.runs import is_locked, run_lock

    lock = tmp_path / ".lock"
    code = (f"from tickets.runs import run_lock\nimport time\nwith run_lock({str(lock)!r}) as held:\n"
            "    print('held', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    assert is_locked(lock)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not is_locked(lock)
    with run_lock(lock) as held:
        assert held


def test_a_run_being_written_is_not_trained_twice(tmp_path, capsys):
    from tickets.runs import run_lock

    run = _find_run(tmp_path)
    (run / "level-01" / "DONE").unlink()
    (run / "summary.json").unlink()
    capsys.readouterr()  # the set-up run's own warnings
    with run_lock(run / ".lock"):
        one_line(capsys, main(["find", "--model", "small-cnn", "--task", "digits-5-9", "--sparsities", "0.5", *FAST,
                               "--out", str(tmp_path / "runs")]), "another process")


# -- 8. advice that names the real cause -----------------------------------------------------------------------------
def test_nan_weights_are_named_not_blamed_on_the_lr(tmp_path, capsys):
    from tickets.models import load_model

    spec = load_model("small-cnn")
    state = spec.module.state_dict()
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    bad = tmp_path / "nan.pth"
    torch.save(state, bad)
    line = one_line(capsys, main([*FIND, *FAST, "--weights", str(bad), "--out", str(tmp_path / "runs")]),
                    "conv1.weight", "not finite")
    assert "lower --lr" not in line


def test_empty_test_split_is_named(tmp_path, capsys):
    root = tmp_path / "data"
    _npz(root)
    with np.load(root / "mnist" / "mnist.npz") as z:
        arrays = dict(z)
    arrays["x_test"], arrays["y_test"] = arrays["x_test"][:0], arrays["y_test"][:0]
    np.savez(root / "mnist" / "mnist.npz", **arrays)
    one_line(capsys, main(["transfer", "--model", "small-cnn", "--task", "mnist", *FAST, "--data-root", str(root),
                           "--out", str(tmp_path / "runs")]), "test split", "empty")
    assert shutil.which("true")


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 10**12) | st.floats(allow_nan=True) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                     max_leaves=12)


@pytest.fixture(scope="module")
def saved_ticket(tmp_path_factory):
    path = tmp_path_factory.mktemp("t") / "t.safetensors"
    mask = Mask({"a.weight": torch.rand(4, 6) > 0.5, "b.weight": torch.rand(3) > 0.5})
    save_ticket(path, Ticket(mask, {"model": "m", "level": 1}))
    return path


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["names", "shapes", "weight_names", "format_version", "meta.level", "meta.pattern",
                            "checksum"]), value=_JSON)
def test_any_header_value_loads_or_fails_with_one_tickets_error(saved_ticket, key, value, tmp_path_factory,
                                                                edit_header):
    """Property: whatever a crafted header holds (with its metadata checksum recomputed, as an attacker would), a
    ticket either loads or fails with one TicketsError line — never another exception."""
    from tickets import ticket as ticket_module

    def forge(meta):
        meta[key] = value if isinstance(value, str) else json.dumps(value)
        meta["meta_checksum"] = ticket_module._meta_checksum(meta)

    path = edit_header(saved_ticket, forge)
    try:
        load_ticket(path)
    except TicketsError as exc:
        assert str(exc) and "\n" not in str(exc)


def test_broken_study_bookkeeping_and_run_config(tmp_path, capsys):
    """A corrupt config.yaml inside a run is rewritten (the directory name says which config it is); corrupt
    jobs.json and a torn progress.jsonl do not stop a study from resuming or from being reported."""
    run = _find_run(tmp_path)
    (run / "config.yaml").write_text("{{{ not yaml")
    assert main(["find", "--model", "small-cnn", "--task", "digits-5-9", "--sparsities", "0.5", *FAST,
                 "--out", str(tmp_path / "runs")]) == 0
    assert "model: small-cnn" in (run / "config.yaml").read_text()
    exp = tmp_path / "e.yaml"
    exp.write_text("models: [small-cnn]\nschedule: {kind: explicit, sparsities: [0.5]}\ntrain: {epochs: 1}\n"
                   "data: {train_size: 200}\nfind:\n  - tasks: [digits-5-9]\n")
    out = tmp_path / "study"
    assert main(["run", str(exp), "--out", str(out), "--device", "cpu", "--quiet", "--no-report"]) == 0
    sdir = out / "study-e"
    (sdir / "jobs.json").write_text('{"jobs": [')
    with open(sdir / "progress.jsonl", "a") as fh:
        fh.write('{"job": "fin')
    capsys.readouterr()
    assert main(["run", str(exp), "--out", str(out), "--device", "cpu", "--quiet"]) == 0  # rewrites jobs.json
    assert json.loads((sdir / "jobs.json").read_text())["jobs"]
    assert (sdir / "report.md").exists()


def test_a_tiny_validation_split_is_warned(caplog):
    """--train-size 2 used to run silently with model selection on one example."""
    import logging

    from tickets.tasks.base import DataConfig, carve

    with caplog.at_level(logging.WARNING, logger="tickets"):
        train, val = carve(100, DataConfig(train_size=2), seed=0, task="digits")
    assert len(val) == 1 and len(train) == 1
    assert "model selection rests on 1 validation example" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tickets"):
        carve(1000, DataConfig(train_size=200), seed=0, task="digits")  # 20 validation examples: quiet
    assert "model selection" not in caplog.text


# -- eval --weights, empty options, misplaced YAML keys, usage hints (one block) --------------------------------------
def _head_file(tmp_path: Path, task: str, *, prefix: str = "", torch_nested: bool = False) -> Path:
    """small-cnn with a head fitted to ``task``, saved as transfer --save-weights does (metadata model / task), or
    as a ``torch.save`` checkpoint ``{"state_dict": {prefix + name: tensor}}``."""
    import safetensors.torch

    from tickets.verbs.prepare import prepare

    prepared = prepare("small-cnn", task, head="fresh", seed=0)
    state = {prefix + k: v.detach().clone().contiguous() for k, v in prepared.model.state_dict().items()}
    if torch_nested:
        path = tmp_path / f"{task}.th"
        torch.save({"epoch": 3, "state_dict": state}, path)
    else:
        path = tmp_path / f"{task}{'-' + prefix.strip('.') if prefix else ''}.safetensors"
        safetensors.torch.save_file(state, str(path), metadata={"model": "small-cnn", "task": task})
    return path


def test_eval_weights_for_another_label_space_names_the_head_shapes_and_the_task(tmp_path, capsys):
    """A CIFAR-100 transfer's weights evaluated on CIFAR-10 used to end in 'unexpected RuntimeError: Error(s) in
    loading state_dict', exit 1."""
    weights = _head_file(tmp_path, "digits")  # 10-way head
    line = one_line(capsys, main(["eval", "--model", "small-cnn", "--task", "digits-0-4", "--weights", str(weights),
                                  "--device", "cpu", "--limit", "20"]),
                    "'head.weight'", "[10, 64]", "[5, 64]", "--task digits")
    assert "unexpected" not in line


@pytest.mark.parametrize("layout", ["module-safetensors", "torch-nested-module"])
def test_eval_weights_take_every_layout_find_takes_and_name_the_prefix(layout, tmp_path, capsys):
    """eval --weights read only transfer's safetensors: the shipped .th checkpoints and a DataParallel save were
    refused ('not a readable safetensors file', "does not fit … (e.g. 'bn1.bias')")."""
    weights = _head_file(tmp_path, "digits-0-4", prefix="module.", torch_nested=layout.startswith("torch"))
    plain = _head_file(tmp_path, "digits-0-4")
    argv = ["eval", "--model", "small-cnn", "--task", "digits-0-4", "--device", "cpu", "--limit", "40", "--json"]
    assert main([*argv, "--weights", str(weights)]) == 0
    out, err = capsys.readouterr()
    assert "stripped wrapper prefix 'module.'" in err and "Traceback" not in err
    assert main([*argv, "--weights", str(plain)]) == 0
    again = json.loads(capsys.readouterr().out)
    first = json.loads(out)
    assert again.pop("weights") == str(plain) and first.pop("weights") == str(weights)
    assert again == first  # the same weights, the same scores
    # the result line names the weights it scored
    assert main([a for a in argv if a != "--json"] + ["--weights", str(plain)]) == 0
    assert f"small-cnn (weights {plain}) on digits-0-4/test" in capsys.readouterr().out


def test_find_weights_with_a_wrapper_prefix_says_which_prefix(tmp_path, capsys):
    weights = _head_file(tmp_path, "digits-5-9", prefix="module.")
    argv = [*FIND, *[f for f in FAST if f != "--quiet"], "--weights", str(weights), "--out", str(tmp_path / "runs")]
    assert main(argv) == 0
    assert "stripped wrapper prefix 'module.'" in capsys.readouterr().err
    # and the run folder keeps it: the notes are part of the run_start event of log.jsonl
    (log,) = (tmp_path / "runs").glob("find-*/log.jsonl")
    (start,) = [e for e in map(json.loads, log.read_text().splitlines()) if e["event"] == "run_start"]
    assert any("stripped wrapper prefix 'module.'" in n for n in start["notes"]), start


def test_a_weights_directory_names_the_checkpoints_in_it(tmp_path, capsys):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for name in ("model.safetensors", "optimizer.pt", "notes.txt"):
        (folder / name).write_bytes(b"x")
    for argv in ([*FIND, *FAST, "--weights", str(folder)], ["eval", "--model", "small-cnn", "--task", "digits-5-9",
                                                             "--weights", str(folder)]):
        line = one_line(capsys, main([*argv, "--out", str(tmp_path / "runs")] if argv[0] == "find" else argv),
                        "is a directory", "model.safetensors", "optimizer.pt")
        assert "notes.txt" not in line


def test_an_indented_warning_starts_at_the_prefix(capsys):
    from tickets.log import enable_console, get_logger

    enable_console()
    get_logger("tickets.test").warning("  %s: %s", "level 2", "degenerate")
    assert "tickets: warning: level 2: degenerate" in capsys.readouterr().err


@pytest.mark.parametrize("flags, words", [
    (["--sparsities", ""], ["--sparsities", "empty"]),
    (["--sparsities", ","], ["--sparsities", "no number"]),
    (["--prunable", ""], ["--prunable", "empty"]),
    (["--pattern", " "], ["--pattern", "empty"]),
    (["--weights", ""], ["--weights", "empty"]),
])
def test_an_explicitly_empty_option_is_an_error_not_the_default(flags, words, tmp_path, capsys):
    """`--sparsities ""` silently ran the default 6-level geometric schedule."""
    argv = [*FIND, *FAST, "--out", str(tmp_path / "runs"), *flags]
    one_line(capsys, main(argv), *words)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text, words", [
    ("schedule: {sparsities: []}\n", ["c.yaml:3:", "schedule.sparsities", "empty list"]),
    ("train: {step_milestones: []}\n", ["c.yaml:3:", "train.step_milestones", "empty list"]),
    ("prunable: ''\n", ["c.yaml:3:", "prunable is empty"]),
    ("epochs: 1\n", ["c.yaml:3:", "unknown key 'epochs'", "did you mean train.epochs?", "train: {epochs: ...}"]),
    ("rate: 0.3\n", ["c.yaml:3:", "did you mean schedule.rate?"]),
    ("levels: 2\n", ["c.yaml:3:", "did you mean schedule.levels?"]),
    ("sparsities: [0.5]\n", ["c.yaml:3:", "did you mean schedule.sparsities?"]),
    ("adv_eps: 2\n", ["c.yaml:3:", "did you mean train.adversarial.eps?"]),
    ("train:\n  rate: 0.2\n", ["c.yaml:4:", "unknown key 'rate' in train", "did you mean schedule.rate?"]),
    ("train:\n  threads: 1\n", ["c.yaml:4:", "did you mean threads?"]),
    ("train:\n  lr: 0.1\n  epochs: two\n", ["c.yaml:5: train.epochs must be an integer"]),
    ("schedule:\n  sparsities:\n    - 0.2\n    - 1.5\n", ["c.yaml:6: schedule.sparsities must be in [0, 1)"]),
])
def test_config_file_errors_cite_file_line_and_where_a_key_belongs(text, words, tmp_path, capsys, monkeypatch):
    """Top-level `epochs: 1` said only "unknown key 'epochs'"; nested errors read "…/c.yaml.train.epochs must be
    an integer" (the path glued to the key, no line)."""
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: small-cnn\ntask: digits-5-9\n" + text)
    line = one_line(capsys, main(["find", "--config", str(cfg), "--device", "cpu"]), *words)
    assert "c.yaml." not in line
    assert not (tmp_path / "runs").exists()


def test_a_flag_error_is_not_blamed_on_the_config_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: small-cnn\ntask: digits-5-9\ntrain:\n  epochs: 1\n")
    line = one_line(capsys, main(["find", "--config", str(cfg), "--epochs", "0"]), "train.epochs must be >= 1")
    assert "c.yaml" not in line


@pytest.mark.parametrize("argv, words", [
    (["report", "DIR", "--out", "X"], ["`tickets report` takes --to", "use --to DIR"]),
    (["double-win", "DIR", "--out=X"], ["`tickets double-win` takes --to", "use --to FILE"]),
    (["find", "--model", "small-cnn", "--task", "digits", "--to", "X"], ["`tickets find` takes --out", "--out DIR"]),
])
def test_an_output_flag_of_another_spelling_names_the_one_this_command_takes(argv, words, capsys):
    """`tickets report DIR --out X` said "--out applies to `tickets find`"."""
    one_line(capsys, main(argv), *words)


def test_a_load_state_dict_error_anywhere_is_one_line_naming_the_tensor(tmp_path, capsys):
    """A weights file load_state_dict refuses (here the demo's cached θ0, replaced by another file) ended in
    'unexpected RuntimeError: Error(s) in loading state_dict for …', exit 1."""
    import safetensors.torch

    from tickets.models import load_model

    state = {k: v.contiguous() for k, v in load_model("small-cnn", pretrained=False).module.state_dict().items()}
    state["stem.weight"] = torch.zeros(3, 3)
    (tmp_path / "demo").mkdir()
    safetensors.torch.save_file(state, str(tmp_path / "demo" / "pretrained.safetensors"))
    one_line(capsys, main(["demo", "--out", str(tmp_path / "demo"), "--quiet", "--device", "cpu", "--threads", "1"]),
             "'stem.weight'", "[3, 3]", "[16, 1, 3, 3]")


def test_counts_in_messages_agree_with_their_noun():
    """'the 1 optimizer steps': a count of one takes the singular."""
    from tickets.training.loop import fine_tune
    from tickets.verbs.prepare import prepare

    prepared = prepare("small-cnn", "digits-5-9", head="fresh", seed=0,
                       data=__import__("tickets.tasks.base", fromlist=["DataConfig"]).DataConfig(train_size=200))
    with pytest.raises(TicketsError, match=r"has only 1 step \("):
        fine_tune(prepared.model, prepared.task, TrainConfig(epochs=1, max_steps=1, batch_size=64), device="cpu",
                  start_step=1, progress=False)


def test_a_rewind_point_beyond_the_fine_tune_leaves_no_run_directory(tmp_path, capsys):
    """The error was right ("beyond the 2 optimizer steps") but came after the run directory was made: config.yaml,
    inputs.json, log.jsonl and .lock were left behind (a newcomer)."""
    argv = ["find", "--model", "small-cnn", "--task", "digits-5-9", "--method", "imp", "--levels", "1",
            "--rewind", "step:50", *FAST, "--out", str(tmp_path / "runs")]
    one_line(capsys, main(argv), "rewind point step:50", "optimizer steps")
    assert not list((tmp_path / "runs").glob("find-*"))
