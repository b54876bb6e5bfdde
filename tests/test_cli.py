"""The `tickets` command: happy paths on digits, and every kind of bad input → one line, exit code 2."""

import subprocess
import sys

import pytest

from tickets.cli import main

FAST = ["--epochs", "1", "--train-size", "300", "--device", "cpu", "--quiet", "--batch-size", "64"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *words):
    assert code == 2
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("tickets: error:"), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert "Traceback" not in err


def test_find_inspect_transfer_eval(tmp_path, capsys):
    code, out, err = run(capsys, "find", "--model", "small-cnn", "--task", "digits-5-9", "--sparsities", "0.5,0.75",
                         "--out", str(tmp_path), *FAST)
    assert code == 0, err
    ticket = next(tmp_path.glob("find-*/level-02/ticket.safetensors"))
    code, out, err = run(capsys, "inspect", str(ticket))
    assert code == 0 and "75" in out and "digits-5-9" in out
    code, out, err = run(capsys, "transfer", "--ticket", str(ticket), "--task", "digits-0-4", "--out", str(tmp_path),
                         "--save-weights", *FAST)
    assert code == 0, err
    assert "sparsity 75.00%" in out
    weights = next(tmp_path.glob("transfer-*/model.safetensors"))
    code, out, err = run(capsys, "eval", "--model", "small-cnn", "--task", "digits-0-4", "--weights", str(weights),
                         "--ticket", str(ticket), "--device", "cpu")
    assert code == 0 and "accuracy" in out and "75.00% sparse" in out


def test_yaml_config_and_unknown_key(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("model: small-cnn\ntask: digits-5-9\nmethod: omp\nschedule:\n  kind: explicit\n"
                    "  sparsities: [0.5]\ntrain:\n  epochs: 1\n  batch_size: 64\ndata:\n  train_size: 300\n")
    code, out, err = run(capsys, "find", "--config", str(good), "--out", str(tmp_path), "--device", "cpu", "--quiet")
    assert code == 0, err
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: small-cnn\ntask: digits-5-9\ntrain:\n  epoch: 1\n")
    code, out, err = run(capsys, "find", "--config", str(bad), "--out", str(tmp_path))
    assert_one_line_error(code, err, "unknown key 'epoch'", "epochs")


@pytest.mark.parametrize(
    "argv, words",
    [
        (["find", "--model", "resnet21", "--task", "digits"], ["resnet21", "resnet20-cifar10"]),
        (["find", "--model", "small-cnn", "--task", "cifar11"], ["cifar11", "cifar10"]),
        (["find", "--model", "small-cnn", "--task", "digits", "--sparsities", "0.5,1.0"], ["sparsit", "[0, 1)"]),
        (["find", "--model", "small-cnn", "--task", "digits", "--sparsities", "-0.1"], ["sparsit"]),
        (["find", "--model", "small-cnn", "--task", "digits", "--rewind", "sometime"], ["rewind"]),
        (["eval", "--model", "small-cnn", "--task", "digits", "--device", "cuda:7"], ["cuda"]),
        (["inspect", "/nonexistent/ticket.safetensors"], ["not found"]),
        (["find", "--model", "small-cnn", "--task", "digits", "--epochs", "many"], ["--epochs"]),
        (["transfer", "--model", "small-cnn", "--task", "digits", "--levels", "3"], ["find"]),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, words, capsys, tmp_path):
    code, out, err = run(capsys, *argv, *(["--out", str(tmp_path)] if argv[0] in ("find", "transfer") else []))
    assert_one_line_error(code, err, *words)


def test_missing_data_file_names_the_fix(tmp_path, capsys):
    code, out, err = run(capsys, "transfer", "--model", "small-cnn", "--task", "cifar10", "--data-root", str(tmp_path),
                         "--out", str(tmp_path))
    assert_one_line_error(code, err, "TICKETS_DATA")


def test_corrupt_and_truncated_ticket(tmp_path, capsys):
    code, _, err = run(capsys, "find", "--model", "small-cnn", "--task", "digits-5-9", "--sparsities", "0.5",
                       "--method", "omp", "--out", str(tmp_path), *FAST)
    assert code == 0, err
    ticket = next(tmp_path.glob("find-*/level-00/ticket.safetensors"))
    data = ticket.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    code, _, err = run(capsys, "inspect", str(cut))
    assert_one_line_error(code, err, "cut.safetensors")
    flipped = tmp_path / "flip.safetensors"
    flipped.write_bytes(data[:-3] + bytes([data[-3] ^ 0xFF]) + data[-2:])
    code, _, err = run(capsys, "inspect", str(flipped))
    assert_one_line_error(code, err, "checksum")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a ticket at all")
    code, _, err = run(capsys, "inspect", str(junk))
    assert_one_line_error(code, err, "junk.pt")


def test_mask_model_mismatch(tmp_path, capsys):
    code, _, err = run(capsys, "find", "--model", "small-cnn", "--task", "digits-5-9", "--sparsities", "0.5",
                       "--method", "omp", "--out", str(tmp_path), *FAST)
    ticket = next(tmp_path.glob("find-*/level-00/ticket.safetensors"))
    code, _, err = run(capsys, "transfer", "--ticket", str(ticket), "--model", "resnet20-cifar10", "--task", "digits",
                       "--out", str(tmp_path), "--model-root", str(tmp_path), *FAST)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_console_script_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tickets.cli", "find", "--model", "nope", "--task", "digits"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "nope" in proc.stderr


def test_pattern_help_lists_every_registered_pattern(capsys):
    """`find --help` listed a hand-written subset (head+neuron was missing); it now reads the registry."""
    from tickets.cli import build_parser
    from tickets.patterns import PATTERNS

    PATTERNS.register("my-blocks", "tickets.patterns.unstructured:Unstructured", help="a plugin's pattern")
    try:
        text = " ".join(build_parser()._subparsers._group_actions[0].choices["find"].format_help().split())
    finally:
        PATTERNS.unregister("my-blocks")
    for name in ("unstructured (default)", "channel", "head+neuron", "nm:N:M", "my-blocks"):
        assert name in text, name


def test_demo_takes_threads_like_every_command(capsys):
    from tickets.cli import build_parser

    assert build_parser().parse_args(["demo", "--threads", "2"]).threads == 2
    code, _, err = run(capsys, "demo", "--threads", "0", "--out", "unused")
    assert_one_line_error(code, err, "threads", "[1, 4096]")
