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
        (["find", "--model", "resnet21", "--task", "digits"], ["resnet21", "resnet20-cifar10", "--plugin MODULE"]),
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


# --- plugin mistakes: one line naming the plugin and the fix, exit 2 (they were `unexpected ...` crashes, exit 1) ---

PLUGIN_SOURCES = {
    "syntax": ("import os\ndef f(:\n    pass\n", ["SyntaxError", "line 2", "fix the plugin"]),
    "raises": ('raise RuntimeError("boom at import")\n', ["RuntimeError: boom at import", "fix the plugin"]),
    "missingdep": ("import not_a_real_dependency_xyz\n", ["'not_a_real_dependency_xyz'", "install it"]),
    "dup": ('from tickets.models import MODELS\nMODELS.register("small-cnn", lambda name, **kw: None)\n',
            ["'small-cnn' is registered already"]),
    "modality": (('from tickets.tasks import TASKS\nTASKS.register("{mod}-task", lambda name, **kw: None, '
                  'modality="video")\n'), ["modality='video'", "'image', 'text'"]),
}


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on sys.path for throwaway plugin modules; forgets what they imported and registered."""
    from tickets import registry
    from tickets.models import MODELS
    from tickets.tasks import TASKS

    folder = tmp_path / "plugins"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    models, tasks, loaded = set(MODELS.names()), set(TASKS.names()), set(registry._PLUGINS_LOADED)
    modules = set(sys.modules)
    yield folder
    for name in set(MODELS.names()) - models:
        MODELS.unregister(name)
    for name in set(TASKS.names()) - tasks:
        TASKS.unregister(name)
    registry._PLUGINS_LOADED.intersection_update(loaded)
    for name in set(sys.modules) - modules:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("kind", sorted(PLUGIN_SOURCES))
def test_plugin_import_mistakes_are_one_line_errors(plugin_dir, capsys, kind):
    source, words = PLUGIN_SOURCES[kind]
    mod = f"plug_{kind}_mistake"
    (plugin_dir / f"{mod}.py").write_text(source.replace("{mod}", mod))
    code, _, err = run(capsys, "models", "--plugin", mod)
    assert_one_line_error(code, err, f"plugin module {mod!r}", *words)


def test_plugin_as_a_file_path(plugin_dir, tmp_path, capsys):
    """`--plugin path/to/plug.py` imports the file; `--plugin plug.py` that is no file says what to pass."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "plug_by_path.py").write_text(
        'from tickets.models import MODELS\nMODELS.register("by-path-net", "tickets.models:_small_cnn", '
        'family="cnn", modality="image", preset="cnn", help="from a plugin file")\n')
    code, out, err = run(capsys, "models", "--plugin", str(elsewhere / "plug_by_path.py"))
    assert code == 0, err
    assert "by-path-net" in out and "from a plugin file" in out
    code, _, err = run(capsys, "models", "--plugin", "not_here_plug.py")
    assert_one_line_error(code, err, "'not_here_plug.py'", "pass the module name (not_here_plug)", "PYTHONPATH")


def test_plugin_factory_mistakes_name_the_entry_and_the_fix(plugin_dir, tmp_path, capsys):
    """A model factory with the wrong signature or returning None, a task factory returning None: one line naming
    the entry, its factory and what it must accept / return (were TypeError / AttributeError crashes, exit 1)."""
    (plugin_dir / "plug_factories.py").write_text(
        "from tickets.models import MODELS\nfrom tickets.tasks import TASKS\n"
        "def narrow(name):\n    return None\n"
        "def none(name, *, model_root=None, pretrained=True, weights=None):\n    return None\n"
        'MODELS.register("narrow-net", narrow, family="cnn", modality="image", preset="cnn")\n'
        'MODELS.register("none-net", none, family="cnn", modality="image", preset="cnn")\n'
        'TASKS.register("none-task", lambda name, **kw: None, modality="image")\n')
    common = ["--plugin", "plug_factories", "--sparsities", "0.5", "--out", str(tmp_path), *FAST]
    code, _, err = run(capsys, "find", "--model", "narrow-net", "--task", "digits", *common)
    assert_one_line_error(code, err, "model 'narrow-net'", "plug_factories.narrow", "model_root",
                          "def load(name, *, model_root=None, pretrained=True, weights=None)")
    code, _, err = run(capsys, "find", "--model", "none-net", "--task", "digits", *common)
    assert_one_line_error(code, err, "model 'none-net'", "plug_factories.none", "returned NoneType",
                          "not a ModelSpec")
    code, _, err = run(capsys, "find", "--model", "small-cnn", "--task", "none-task", *common)
    assert_one_line_error(code, err, "task 'none-task'", "returned NoneType", "not a Task")
