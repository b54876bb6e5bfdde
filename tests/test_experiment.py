"""`tickets run`: schema validation with line numbers, expansion into jobs, dry-run statuses, reuse by hash."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tickets.cli import main
from tickets.errors import TicketsError
from tickets.study.execute import run_experiment
from tickets.study.plan import Expander, plan
from tickets.study.spec import load_experiment

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p for p in (REPO / "examples").glob("*.yaml"))

TINY = """\
name: tiny
models: [small-cnn]
seeds: [0, 1]
schedule: {kind: geometric, rate: 0.5, levels: 2}
train: {epochs: 1, batch_size: 32, optimizer: adamw, lr: 0.003}
data: {train_size: 120, limit: 60}
find:
  - tasks: [digits-5-9]
    methods: [imp]
transfer:
  - from: [digits-5-9]
    to: [digits-0-4]
    methods: [imp]
"""


def _write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """The tiny study run once: 2 seeds × (IMP find on digits 5-9 with 2 levels, 2 transfers, 2 dense)."""
    root = tmp_path_factory.mktemp("tiny")
    exp = _write(root, TINY)
    out = root / "runs"
    rc = run_experiment(exp, out=out, device="cpu", progress=False, report=False, stream=open("/dev/null", "w"))
    assert rc == 0
    return exp, out


# -- expansion ---------------------------------------------------------------------------------------------------
def test_cv_example_expands_to_44_jobs(tmp_path):
    exp = load_experiment(REPO / "examples" / "cv-resnet20.yaml")
    jobs = Expander(exp).jobs()
    kinds = [j.kind for j in jobs]
    # finds: 4 IMP tasks + OMP + random on CIFAR-10, × 2 seeds; transfers: 3 targets × 4 levels × 2 seeds;
    # dense: 4 tasks × 2 seeds
    assert (kinds.count("find"), kinds.count("transfer"), kinds.count("dense")) == (12, 24, 8)
    assert [j.seed for j in jobs] == sorted(j.seed for j in jobs)  # seed-major order
    assert {(j.source, j.task) for j in jobs if j.kind == "transfer"} == {
        ("cifar10", "cifar100"), ("cifar10", "fashion-mnist"), ("cifar10", "mnist")}


def test_fractions_levels_and_diagonal(tmp_path):
    text = """\
models: [resnet20-cifar10]
seeds: [0, 1, 2]
schedule: {levels: 3}
data: {train_size: 1000}
transfer:
  - from: [cifar10, mnist]
    to: [cifar10, mnist]
    levels: [2, 3]
    fractions: [0.1, 1.0]
"""
    jobs = Expander(load_experiment(_write(tmp_path, text))).jobs()
    finds = [j for j in jobs if j.kind == "find"]
    transfers = [j for j in jobs if j.kind == "transfer"]
    dense = [j for j in jobs if j.kind == "dense"]
    assert len(finds) == 2 * 3  # implied by the transfer sources, drawn with the shared settings
    # 2 sources × 2 targets × 2 fractions × 2 levels × 3 seeds, minus the diagonal at fraction 1 (the find runs)
    assert len(transfers) == (8 - 2) * 2 * 3
    assert {j.level for j in transfers} == {2, 3}
    assert all(j.config.data.train_size == (100 if j.fraction == 0.1 else 1000) for j in transfers + dense)
    assert len(dense) == 2 * 2 * 3  # targets × fractions × seeds
    assert not [j for j in transfers if j.source == j.task and j.fraction == 1.0]


def test_cv_example_matches_the_cli_find_command():
    """The experiment's CIFAR-10 IMP finds hash like `tickets find ... --out runs/cv` (another engineer's runs)."""
    from tickets.cli import _config, build_parser
    from tickets.config import FindConfig

    exp = load_experiment(REPO / "examples" / "cv-resnet20.yaml")
    ex = Expander(exp)
    for seed in (0, 1):
        job = next(j for j in ex.jobs() if j.kind == "find" and j.task == "cifar10" and j.method == "imp"
                   and j.seed == seed)
        args = build_parser().parse_args(
            f"find --model resnet20-cifar10 --task cifar10 --method imp --levels 4 --rate 0.4 --train-size 2000 "
            f"--epochs 3 --limit 2000 --seed {seed} --out runs/cv".split())
        cli_cfg, _ = _config(FindConfig, args)
        assert ex.resolved_find(job.config) == ex.resolved_find(cli_cfg)
        ex.predict(job, Path("runs/cv"))
        from tickets.runs import config_hash

        assert job.run.name == f"find-{config_hash(ex.resolved_find(cli_cfg))}"


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_dry_run(example, tmp_path, capsys):
    assert main(["run", str(example), "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "jobs (" in out and " todo" in out


# -- dry run and reuse ---------------------------------------------------------------------------------------------
def test_dry_run_statuses_before_and_after(tiny_study, tmp_path):
    exp_path, out = tiny_study
    # before: a fresh out dir has everything to do
    _, jobs = plan(load_experiment(exp_path), tmp_path / "empty")
    assert [j.status for j in jobs] == ["todo"] * 10  # per seed: 2 dense, 1 find, 2 transfers
    # after the run: every prediction (find hash, transfer hash from the ticket checksum) points at a finished run
    _, jobs = plan(load_experiment(exp_path), out)
    assert len(jobs) == 10
    assert {j.status for j in jobs} == {"done"}
    assert all(j.run is not None and (j.run / "level-00" / "DONE").exists() for j in jobs)


def test_dry_run_reports_partial_and_reruns_only_that(tiny_study, tmp_path, capsys):
    exp_path, out = tiny_study
    copy = tmp_path / "runs"
    shutil.copytree(out, copy)
    _, jobs = plan(load_experiment(exp_path), copy)
    find = next(j for j in jobs if j.kind == "find" and j.seed == 1)
    (find.run / "level-02" / "DONE").unlink()
    dense = next(j for j in jobs if j.kind == "dense" and j.seed == 0)
    shutil.rmtree(dense.run)
    assert main(["run", str(exp_path), "--dry-run", "--out", str(copy)]) == 0
    text = capsys.readouterr().out
    assert "8 done, 1 partial, 1 todo" in text
    assert "partial  find imp small-cnn digits-5-9 seed 1" in text and "(2/3 levels)" in text
    # the rerun trains only those two, then everything is done again (no live process holds their locks)
    assert run_experiment(exp_path, out=copy, device="cpu", progress=False, report=False,
                          stream=open("/dev/null", "w")) == 0
    progress = (copy / "study-tiny" / "progress.jsonl").read_text().splitlines()
    assert len(progress) == 10 + 2
    _, jobs = plan(load_experiment(exp_path), copy)
    assert {j.status for j in jobs} == {"done"}


def test_transfer_runs_are_shared_with_the_cli(tiny_study, capsys):
    """`tickets transfer` with the same settings lands in the experiment's run directory (reused, not re-run)."""
    exp_path, out = tiny_study
    _, jobs = plan(load_experiment(exp_path), out)
    job = next(j for j in jobs if j.kind == "transfer" and j.seed == 0 and j.level == 1)
    rc = main(["transfer", "--ticket", job.config.ticket, "--task", "digits-0-4", "--seed", "0", "--epochs", "1",
               "--batch-size", "32", "--optimizer", "adamw", "--lr", "0.003", "--train-size", "120", "--limit", "60",
               "--out", str(out), "--device", "cpu", "--quiet"])
    assert rc == 0
    assert f"run: {job.run}" in capsys.readouterr().out


# -- validation ----------------------------------------------------------------------------------------------------
BAD = [
    ("models: [small-cnn]\nfind:\n  - tasks: [digits]\n    method: [imp]\n", 4, "unknown key 'method'"),
    ("models: [small-cnn]\ntrain:\n  epochs: 1\n  epoch: 2\nfind:\n  - tasks: [digits]\n", 4,
     "unknown key 'epoch' in train"),
    ("models:\n  - small-cnn\n  - resnet21-cifar10\nfind:\n  - tasks: [digits]\n", 3,
     "unknown model 'resnet21-cifar10'"),
    ("models: [small-cnn]\nfind:\n  - tasks: [digits]\ntransfer:\n  - from: [digits]\n    to: [cifar11]\n", 6,
     "unknown task 'cifar11'"),
    ("models: [small-cnn]\nfind:\n  - tasks: [digits]\n    methods: [imp, lottery]\n", 4, "unknown method 'lottery'"),
    ("models: [small-cnn]\nfractions: [0.5, 1.5]\nfind:\n  - tasks: [digits]\n", 2, "fractions are in (0, 1]"),
    ("models: [small-cnn]\nfind:\n  - tasks: [glue/sst2]\n", 3, "is a text task"),
    ("models: [small-cnn]\ntrain: {adversarial: {atack: pgd}}\nfind:\n  - tasks: [digits]\n", 2,
     "unknown key 'atack' in train.adversarial"),
    ("models: [small-cnn]\nseeds: [0]\nseeds: [1]\nfind:\n  - tasks: [digits]\n", 3, "appears twice"),
    ("models: [small-cnn]\nfind:\n  - tasks: [digits]\ntransfer:\n  - from: [digits]\n    to: [digits-0-4]\n"
     "    levels: [1, 9]\n", 7, "level 9 is beyond"),
    ("models: [small-cnn]\nschedule: {rate: 1.5}\nfind:\n  - tasks: [digits]\n", 2, "must be in (0, 1)"),
    ("models: [small-cnn]\nfind:\n  - tasks: [digits\n", 4, "not valid YAML"),
    # a pattern or prunable set the model cannot take: found before the dense baselines train (it failed the job)
    ("models: [small-cnn]\nfind:\n  - tasks: [digits]\n    pattern: head\n", 4, "pattern 'head' finds no BERT"),
    ("models: [small-cnn]\nprunable: bert\nfind:\n  - tasks: [digits]\n", 2, "preset 'bert' found no transformer"),
]


@pytest.mark.parametrize("text,line,message", BAD, ids=[b[2] for b in BAD])
def test_validation_errors_name_the_line(text, line, message, tmp_path, capsys):
    path = _write(tmp_path, text)
    assert main(["run", str(path), "--dry-run", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"tickets: error: {path}:{line}: ")
    assert message in err
    assert not (tmp_path / "runs").exists()  # nothing ran, nothing was written


def test_a_directory_as_experiment_file_names_the_files_in_it(tmp_path, capsys):
    _write(tmp_path, "models: [small-cnn]\n", "study.yaml")
    assert main(["run", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a directory" in err and "study.yaml" in err


def test_load_experiment_raises_tickets_error(tmp_path):
    with pytest.raises(TicketsError, match="not found"):
        load_experiment(tmp_path / "missing.yaml")
    with pytest.raises(TicketsError, match="declares no models"):
        load_experiment(_write(tmp_path, "seeds: [0]\n"))


def test_block_seeds_and_ticket_seed(tmp_path):
    """Tickets drawn once (seed 0) and fine-tuned on each target with three seeds: the BERT-study layout."""
    text = ("models: [small-cnn]\nseeds: [0, 1, 2]\nschedule: {kind: explicit, sparsities: [0.5]}\n"
            "find:\n  - tasks: [digits-5-9]\n    seeds: [0]\n"
            "transfer:\n  - from: [digits-5-9]\n    to: [digits-5-9, digits-0-4]\n    ticket_seed: 0\n")
    jobs = Expander(load_experiment(_write(tmp_path, text))).jobs()
    finds = [j for j in jobs if j.kind == "find"]
    transfers = [j for j in jobs if j.kind == "transfer"]
    assert [(j.task, j.seed) for j in finds] == [("digits-5-9", 0)]  # one find, not one per seed
    assert sorted((j.task, j.seed) for j in transfers) == [("digits-0-4", 0), ("digits-0-4", 1), ("digits-0-4", 2),
                                                           ("digits-5-9", 1), ("digits-5-9", 2)]  # seed 0 on its
    assert all(j.source_job is finds[0] for j in transfers)  # own task is the find run itself
    assert "(ticket seed 0)" in next(j for j in transfers if j.seed == 2).label()
    dense = sorted((j.task, j.seed) for j in jobs if j.kind == "dense")
    assert dense == [(t, s) for t in ("digits-0-4", "digits-5-9") for s in (0, 1, 2)]


def test_dry_run_refreshes_a_stale_jobs_index_for_the_report(tiny_study, tmp_path):
    """Runs finished by another process or a priority phase file are missing from a study's jobs.json (a transfer
    planned before its ticket existed has no run name there), so `tickets report` left them out; a dry run now
    rewrites the index from the current plan."""
    import json
    import shutil

    exp, out = tiny_study
    copy = tmp_path / "runs"
    shutil.copytree(out, copy)
    index = copy / "study-tiny" / "jobs.json"
    stale = json.loads(index.read_text())
    for job in stale["jobs"]:
        if job["kind"] == "transfer":
            job["run"], job["status"] = None, "todo"  # as written before the tickets existed
    index.write_text(json.dumps(stale))
    assert run_experiment(exp, out=copy, dry_run=True, stream=open("/dev/null", "w")) == 0
    fresh = json.loads(index.read_text())
    transfers = [j for j in fresh["jobs"] if j["kind"] == "transfer"]
    assert transfers and all(j["run"] and j["status"] == "done" for j in transfers)


def test_job_labels_tell_adversarial_and_pattern_jobs_apart(tmp_path):
    """A newcomer's double-win study printed "dense resnet20-cifar10 mnist seed 0" twice (standard and adversarial
    fine-tuning) in --dry-run and progress lines; every job's label is now its own."""
    from tickets.study.plan import plan
    from tickets.study.spec import load_experiment

    adv = "{adversarial: {attack: pgd, eps: 2, alpha: 1, steps: 1}}"
    path = _write(tmp_path, f"""\
models: [small-cnn]
seeds: [0]
schedule: {{kind: explicit, sparsities: [0.5]}}
find:
  - tasks: [digits-5-9]
  - tasks: [digits-5-9]
    pattern: channel
    seeds: [7]
    train: {adv}
transfer:
  - {{from: digits-5-9, to: digits-0-4}}
  - {{from: digits-5-9, to: digits-0-4, train: {adv}}}
""")
    _, jobs = plan(load_experiment(path), tmp_path / "runs")
    labels = [j.label() for j in jobs]
    assert len(set(labels)) == len(labels), labels
    assert "dense small-cnn digits-0-4 seed 0 adv-ft" in labels and "dense small-cnn digits-0-4 seed 0" in labels
    assert "find omp channel robust small-cnn digits-5-9 seed 7" in labels or \
        "find imp channel robust small-cnn digits-5-9 seed 7" in labels
