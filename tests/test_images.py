"""Image tasks: files and layouts, safe unpickling, download, splits, batches, augmentation, resize, errors."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from tickets.errors import TicketsError
from tickets.models import load_model
from tickets.tasks import DataConfig, load_task, task_names
from tickets.tasks.images import (
    Accuracy,
    download_cifar,
    match_model,
    random_crop,
    random_flip,
    safe_unpickle,
)

RESNET = load_model("resnet20-cifar10", pretrained=False)  # input 3×32×32
SMALL = load_model("small-cnn")  # input 1×8×8


def _spec(size, channels):
    return types.SimpleNamespace(input_size=size, in_channels=channels)


def _write_npz(root: Path, folder: str, n_train=100, n_test=50, side=32, channels=3, classes=10, sort=True):
    rng = np.random.default_rng(0)
    y_train = np.arange(n_train) % classes
    y_test = np.arange(n_test) % classes
    if sort:  # sorted by class, like some real sets
        y_train, y_test = np.sort(y_train), np.sort(y_test)
    x_train = rng.integers(0, 256, (n_train, side, side, channels), dtype=np.uint8)
    x_test = rng.integers(0, 256, (n_test, side, side, channels), dtype=np.uint8)
    (root / folder).mkdir(parents=True, exist_ok=True)
    np.savez(root / folder / f"{folder}.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
             classes=np.array([f"c{i}" for i in range(classes)]))
    return x_train, y_train, x_test, y_test


# --- registry and errors ------------------------------------------------------------------------------------------


def test_task_names():
    names = task_names()
    for n in ("cifar10", "cifar100", "mnist", "fashion-mnist", "digits", "digits-0-4", "digits-5-9"):
        assert n in names
    assert "glue/<task>" in names and "mlm/<corpus>" in names


def test_unknown_task_lists_names():
    with pytest.raises(TicketsError, match=r"unknown task 'cifar11'.*cifar10.*digits-5-9.*glue/<task>"):
        load_task("cifar11", model=RESNET)


def test_missing_data_names_path_and_fix(tmp_path, monkeypatch):
    with pytest.raises(TicketsError) as err:
        load_task("fashion-mnist", model=RESNET, data_root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "fashion_mnist" / "fashion_mnist.npz") in msg
    assert "--data-root" in msg and "TICKETS_DATA" in msg
    with pytest.raises(TicketsError, match="download_cifar"):
        load_task("cifar100", model=RESNET, data_root=tmp_path)
    monkeypatch.delenv("TICKETS_DATA", raising=False)
    with pytest.raises(TicketsError, match="TICKETS_DATA"):
        load_task("mnist", model=RESNET)
    assert len(load_task("digits", model=SMALL).test) == 360  # digits need no data root


def test_text_tasks_dispatch_lazily():
    """Image tasks never import the text modules (nor transformers); the text families are registry entries that
    import their module on first use."""
    code = ("import sys, tickets.tasks as t\n"
            "t.load_task('digits', model=None)\n"
            "assert 'tickets.tasks.glue' not in sys.modules and 'transformers' not in sys.modules\n"
            "assert t.canonical_task('glue/SST-2') == 'glue/sst2'\n"
            "assert 'tickets.tasks.glue' in sys.modules and 'transformers' not in sys.modules\n"
            "assert t.task_modality('mlm/wikitext-2') == 'text' and t.task_modality('cifar10') == 'image'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_data_config(tmp_path):
    _write_npz(tmp_path, "cifar10")
    with pytest.raises(TicketsError, match="train_size"):
        load_task("cifar10", model=RESNET, data_root=tmp_path, data=DataConfig(train_size=101))
    with pytest.raises(TicketsError, match="val"):
        load_task("cifar10", model=RESNET, data_root=tmp_path, data=DataConfig(val_size=100))
    with pytest.raises(TicketsError, match="val_fraction"):
        load_task("cifar10", model=RESNET, data_root=tmp_path, data=DataConfig(val_fraction=1.5))


def test_bad_npz_is_one_error(tmp_path):
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "mnist.npz").write_bytes(b"garbage")
    with pytest.raises(TicketsError, match="mnist.npz"):
        load_task("mnist", model=RESNET, data_root=tmp_path)
    np.savez(tmp_path / "mnist" / "mnist.npz", x_train=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(TicketsError, match="lacks y_train"):
        load_task("mnist", model=RESNET, data_root=tmp_path)


# --- splits -------------------------------------------------------------------------------------------------------


def test_splits_sizes_disjoint_and_seeded(tmp_path):
    x_train, y_train, x_test, y_test = _write_npz(tmp_path, "cifar10")
    cfg = DataConfig(train_size=80, val_fraction=0.25)
    a = load_task("cifar10", model=RESNET, data_root=tmp_path, data=cfg, seed=1)
    assert (len(a.train), len(a.val), len(a.test)) == (60, 20, 50)
    assert a.num_outputs == 10 and a.kind == "image" and a.primary_metric == "accuracy"
    assert a.info["classes"][:2] == ["c0", "c1"] and a.info["sizes"] == {"train": 60, "val": 20, "test": 50}

    def rows(split):  # identify images by their bytes
        return {bytes(img.numpy().tobytes()) for img in split.x}

    assert not rows(a.train) & rows(a.val)
    all_train = {bytes(np.ascontiguousarray(img.transpose(2, 0, 1)).tobytes()) for img in x_train}
    assert rows(a.train) | rows(a.val) <= all_train
    b = load_task("cifar10", model=RESNET, data_root=tmp_path, data=cfg, seed=1)
    c = load_task("cifar10", model=RESNET, data_root=tmp_path, data=cfg, seed=2)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)
    assert rows(a.val) != rows(c.val)
    # the test order is fixed (seed 0), whatever the run seed, and shuffled although the file is sorted by class
    assert torch.equal(a.test.x, c.test.x) and torch.equal(a.test.y, c.test.y)
    assert len(set(a.test.limit(10).y.tolist())) >= 5
    assert sorted(a.test.y.tolist()) == sorted(y_test.tolist())


def test_val_size_and_limit(tmp_path):
    _write_npz(tmp_path, "cifar10")
    t = load_task("cifar10", model=RESNET, data_root=tmp_path, data=DataConfig(val_size=7, limit=5))
    assert (len(t.train), len(t.val), len(t.test)) == (93, 5, 5)
    t0 = load_task("cifar10", model=RESNET, data_root=tmp_path, data=DataConfig(val_size=0))  # evaluation only
    assert len(t0.val) == 0 and list(t0.val.batches(4)) == [] and len(t0.train) == 100
    full = load_task("cifar10", model=RESNET, data_root=tmp_path)
    assert torch.equal(full.test.limit(5).x, t.test.x)  # limit = the first N in the fixed order
    assert full.test.limit(None) is full.test and len(full.test.limit(10**6)) == 50


def test_digits():
    d = load_task("digits", model=SMALL, data=DataConfig(val_fraction=0.1))
    assert (len(d.train) + len(d.val), len(d.test)) == (1437, 360)
    assert d.test.y.bincount().tolist() == [36, 36, 35, 37, 36, 37, 36, 36, 35, 36]  # stratified
    assert d.info["augment"]["flip"] is False
    other = load_task("digits", model=SMALL, seed=5)
    assert torch.equal(d.test.x, other.test.x)  # the test split does not depend on the run seed
    x = next(d.test.batches(400))["x"]
    assert x.shape == (360, 1, 8, 8) and x.min() == 0 and x.max() == 1
    lo = load_task("digits-0-4", model=SMALL)
    hi = load_task("digits-5-9", model=SMALL)
    assert lo.num_outputs == hi.num_outputs == 5 and hi.info["classes"] == ["5", "6", "7", "8", "9"]
    assert set(lo.test.y.tolist()) == set(hi.test.y.tolist()) == set(range(5))
    assert len(lo.test) + len(hi.test) == 360 and len(lo.train) + len(lo.val) + len(hi.train) + len(hi.val) == 1437


# --- batches, augmentation, resize --------------------------------------------------------------------------------


def test_batches_shapes_and_order(tmp_path):
    x_train, *_ = _write_npz(tmp_path, "cifar10")
    t = load_task("cifar10", model=RESNET, data_root=tmp_path, data=DataConfig(val_size=10))
    batches = list(t.train.batches(32))
    assert [len(b["y"]) for b in batches] == [32, 32, 26]
    assert [len(b["y"]) for b in t.train.batches(32, drop_last=True)] == [32, 32]
    b = batches[0]
    assert b["x"].dtype == torch.float32 and b["y"].dtype == torch.int64 and b["x"].shape == (32, 3, 32, 32)
    assert torch.equal(b["x"], t.train.x[:32].float() / 255)  # no augmentation, native size: exact pixels
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    s1 = [b["y"] for b in t.train.batches(32, shuffle=True, generator=g(1))]
    s2 = [b["y"] for b in t.train.batches(32, shuffle=True, generator=g(1))]
    s3 = [b["y"] for b in t.train.batches(32, shuffle=True, generator=g(2))]
    assert all(torch.equal(a, b) for a, b in zip(s1, s2)) and not all(torch.equal(a, b) for a, b in zip(s1, s3))
    assert sorted(torch.cat(s1).tolist()) == sorted(t.train.y.tolist())


def test_augmentation_is_deterministic_and_bounded(tmp_path):
    _write_npz(tmp_path, "cifar10")
    t = load_task("cifar10", model=RESNET, data_root=tmp_path)
    assert t.info["augment"] == {"crop_pad": 4, "flip": True}

    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([b["x"] for b in t.train.batches(16, shuffle=True, generator=gen, augment=True)])

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (90, 3, 32, 32) and 0 <= a.min() and a.max() <= 1
    plain = torch.cat([b["x"] for b in t.train.batches(16, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert not torch.equal(a, plain)
    off = load_task("cifar10", model=RESNET, data_root=tmp_path, data=DataConfig(augment=False))
    assert off.info["augment"] == {"crop_pad": 0, "flip": False}
    first = next(off.train.batches(8, augment=True))["x"]
    assert torch.equal(first, off.train.x[:8].float() / 255)  # DataConfig.augment=False turns it off


def test_random_crop_and_flip_are_shifts_and_mirrors():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, 2, 6, 6)
    out = random_crop(x, 2, gen)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(64):  # each output is one window of the zero-padded image
        assert any(torch.equal(out[i], padded[i, :, dy : dy + 6, dx : dx + 6]) for dy in range(5) for dx in range(5))
    assert not torch.equal(out, x)
    f = random_flip(x, gen)
    same = [torch.equal(f[i], x[i]) for i in range(64)]
    assert all(s or torch.equal(f[i], x[i].flip(-1)) for i, s in enumerate(same)) and 10 < sum(same) < 54


def test_no_flips_on_digit_sets(tmp_path):
    _write_npz(tmp_path, "mnist", side=28, channels=1)
    _write_npz(tmp_path, "fashion_mnist", side=28, channels=1)
    assert load_task("mnist", model=RESNET, data_root=tmp_path).info["augment"] == {"crop_pad": 4, "flip": False}
    assert load_task("fashion-mnist", model=RESNET, data_root=tmp_path).info["augment"]["flip"] is True
    assert load_task("digits", model=SMALL).info["augment"] == {"crop_pad": 1, "flip": False}


def test_grayscale_to_rgb_model(tmp_path):
    _write_npz(tmp_path, "mnist", side=28, channels=1)
    t = load_task("mnist", model=RESNET, data_root=tmp_path)
    x = next(t.test.batches(8))["x"]
    assert x.shape == (8, 3, 32, 32) and x.is_contiguous()
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    x_aug = next(t.train.batches(8, augment=True, generator=torch.Generator().manual_seed(0)))["x"]
    assert x_aug.shape == (8, 3, 32, 32)


def test_rgb_to_grayscale_and_downsize():
    x = torch.rand(4, 3, 32, 32)
    y = match_model(x, 8, 1)
    assert y.shape == (4, 1, 8, 8)
    assert torch.allclose(y.mean(), x.mean(), atol=1e-3)  # antialiased average keeps the mean
    assert torch.equal(match_model(x, None, None), x)
    assert match_model(torch.rand(2, 1, 8, 8), 224, 3).shape == (2, 3, 224, 224)
    with pytest.raises(TicketsError):
        match_model(torch.rand(1, 2, 8, 8), None, 3)


def test_accuracy_metric():
    m = Accuracy()
    assert np.isnan(m.compute()["accuracy"])
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    m.update(logits[:2], {"y": torch.tensor([0, 0])})
    m.update(logits[2:], {"y": torch.tensor([0])})
    out = m.compute()
    assert out["accuracy"] == pytest.approx(2 / 3)
    ref = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 0, 0])).item()
    assert out["loss"] == pytest.approx(ref, rel=1e-6)


# --- CIFAR python layout, safe unpickling, download ---------------------------------------------------------------


class _Py2Pickler(pickle._Pickler):
    """Writes bytes and str as Python 2 ``str`` (BINSTRING), as in the official CIFAR pickles (made by Python 2)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_str8(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        n = len(data)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + data if n < 256
                   else pickle.BINSTRING + struct.pack("<i", n) + data)

    dispatch[bytes] = _save_str8
    dispatch[str] = _save_str8


def _py2_dumps(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def _cifar_layout(root: Path, which: str, per_batch=6):
    """Write the official python layout: dict pickles at protocol 2, Python-2 strings for CIFAR-10 (like the
    originals), Python-3 bytes (``_codecs.encode``) for CIFAR-100."""
    dumps = _py2_dumps if which == "cifar10" else (lambda obj: pickle.dumps(obj, protocol=2))
    rng = np.random.default_rng(1)
    if which == "cifar10":
        d, train, test, meta = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", \
            "batches.meta"
        labels_key, names_key, k = b"labels", b"label_names", 10
    else:
        d, train, test, meta = root / "cifar-100-python", ["train"], "test", "meta"
        labels_key, names_key, k = b"fine_labels", b"fine_label_names", 100
    d.mkdir(parents=True)
    xs, ys = {}, {}
    for name in [*train, test]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, k, per_batch).tolist()
        xs[name], ys[name] = data, labels
        batch = {b"batch_label": name.encode(), labels_key: labels, b"data": data,
                 b"filenames": [f"{i}.png".encode() for i in range(per_batch)]}
        if which == "cifar100":
            batch[b"coarse_labels"] = [y // 5 for y in labels]
        (d / name).write_bytes(dumps(batch))
    (d / meta).write_bytes(dumps({names_key: [f"class{i}".encode() for i in range(k)]}))
    x_train = np.concatenate([xs[n] for n in train]).reshape(-1, 3, 32, 32)
    y_train = sum((ys[n] for n in train), [])
    return d, x_train, y_train, xs[test].reshape(-1, 3, 32, 32), ys[test]


def _tar(src_dir: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src_dir, arcname=src_dir.name)
    return dest


@pytest.mark.parametrize("which", ["cifar10", "cifar100"])
def test_cifar_python_layout_dir_and_tarball(tmp_path, which):
    src = tmp_path / "src"
    d, x_train, y_train, x_test, y_test = _cifar_layout(src, which)
    no_split = DataConfig(val_size=0, augment=False)

    def check(task):
        assert task.num_outputs == (10 if which == "cifar10" else 100) and task.info["classes"][1] == "class1"
        assert torch.equal(task.train.x, torch.from_numpy(x_train)) and task.train.y.tolist() == y_train
        assert sorted(task.test.y.tolist()) == sorted(y_test)

    check(load_task(which, model=RESNET, data_root=src, data=no_split))  # <root>/cifar-10-batches-py/
    tar_root = tmp_path / "tar"
    (tar_root / which).mkdir(parents=True)
    _tar(d, tar_root / which / {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}[which])
    task = load_task(which, model=RESNET, data_root=tar_root, data=no_split)
    assert task.info["source"] == "cifar-tarball"
    check(task)


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for blob in (pickle.dumps({b"data": Evil()}, protocol=2), pickle.dumps(Evil())):
        with pytest.raises(TicketsError, match="not allowed"):
            safe_unpickle(blob, "evil")
    # through load_task: a poisoned batch in an otherwise valid layout
    d, *_ = _cifar_layout(tmp_path / "root", "cifar10")
    (d / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(TicketsError, match=r"data_batch_3.*not allowed"):
        load_task("cifar10", model=RESNET, data_root=tmp_path / "root")
    assert not marker.exists()
    # builtins smuggled through an allowed name are refused too
    evil_codecs = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x06\x00\x00\x00base64\x86R."
    with pytest.raises(TicketsError):
        safe_unpickle(evil_codecs, "evil")
    obj_array = pickle.dumps({"data": np.array([object()], dtype=object)}, protocol=2)
    with pytest.raises(TicketsError):
        safe_unpickle(obj_array, "evil")


def test_download_cifar_from_file_url(tmp_path):
    d, x_train, *_ = _cifar_layout(tmp_path / "src", "cifar10")
    tarball = _tar(d, tmp_path / "cifar-10-python.tar.gz")
    blob = tarball.read_bytes()
    md5, sha = hashlib.md5(blob).hexdigest(), hashlib.sha256(blob).hexdigest()
    root = tmp_path / "data"
    url = tarball.as_uri()
    with pytest.raises(TicketsError, match="checksum mismatch"):
        download_cifar(root, "cifar10", url=url, md5="0" * 32)
    assert not (root / "cifar10" / "cifar-10-python.tar.gz").exists()
    assert [p.name for p in (root / "cifar10").iterdir()] == []  # no partial file left
    path = download_cifar(root, "cifar10", url=url, md5=md5, sha256=sha)
    assert path == root / "cifar10" / "cifar-10-python.tar.gz" and path.read_bytes() == blob
    assert download_cifar(root, "cifar10", url="file:///nonexistent", md5=md5) == path  # kept: checksum matches
    task = load_task("cifar10", model=RESNET, data_root=root, data=DataConfig(val_size=0))
    assert torch.equal(task.train.x, torch.from_numpy(x_train))
    with pytest.raises(TicketsError, match="could not download"):
        download_cifar(tmp_path / "other", "cifar100", url=(tmp_path / "missing.tar.gz").as_uri())
    with pytest.raises(TicketsError, match="cifar10 or cifar100"):
        download_cifar(root, "cifar1000")


# --- real data ----------------------------------------------------------------------------------------------------


@pytest.mark.data
def test_real_sets_load(shared_data):
    c10 = load_task("cifar10", model=RESNET, data_root=shared_data, data=DataConfig(limit=200))
    assert (len(c10.train), len(c10.val), len(c10.test)) == (9000, 200, 200) and c10.num_outputs == 10
    assert c10.info["classes"][0] == "airplane" and len(set(c10.test.y.tolist())) == 10
    c100 = load_task("cifar100", model=SMALL, data_root=shared_data, data=DataConfig(limit=64))
    b = next(c100.test.batches(64))
    assert c100.num_outputs == 100 and b["x"].shape == (64, 1, 8, 8)


@pytest.mark.data
def test_real_mnist_to_resnet(shared_data):
    t = load_task("mnist", model=RESNET, data_root=shared_data, data=DataConfig(limit=64))
    assert (len(t.train), len(t.val), len(t.test)) == (54000, 64, 64) and t.info["augment"]["flip"] is False
    x = next(t.test.batches(64))["x"]
    assert x.shape == (64, 3, 32, 32) and torch.equal(x[:, 0], x[:, 2])
    assert 0.05 < x.mean() < 0.25 and len(set(t.test.y.tolist())) == 10  # dark background, shuffled classes
    f = load_task("fashion-mnist", model=SMALL, data_root=shared_data, data=DataConfig(limit=8))
    assert f.info["augment"]["flip"] is True and next(f.test.batches(8))["x"].shape == (8, 1, 8, 8)


# --- Task.from_numpy ----------------------------------------------------------------------------------------------

def _stripes(n, rng):
    """N×8×8×3 uint8 images whose class (0..2) is which third of the columns is bright."""
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 60, (n, 8, 8, 3)).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, :, c * 2 + 1: c * 2 + 4] += 180
    return x, y


def test_from_numpy_trains_and_evaluates_a_tiny_task():
    """numpy arrays as image libraries give them (N×H×W×C uint8, a channel-reversed BGR view torch cannot share)
    become a task that trains and scores; the batches equal from_tensors' on a copy; a ragged list is one error."""
    from torch import nn

    from tickets.config import TrainConfig
    from tickets.models import from_module
    from tickets.tasks import Task
    from tickets.training.evaluate import evaluate
    from tickets.training.loop import fine_tune

    rng = np.random.default_rng(0)
    (x_train, y_train), (x_test, y_test) = _stripes(240, rng), _stripes(90, rng)
    bgr_train, bgr_test = x_train[..., ::-1], x_test[..., ::-1]  # negative strides
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
    net.add_module("head", nn.Linear(32, 3))
    spec = from_module(net, head="head", input_size=8, in_channels=1)
    task = Task.from_numpy("stripes", bgr_train, y_train, bgr_test, y_test, model=spec, classes=["l", "m", "r"])
    same = Task.from_tensors("stripes", bgr_train.copy(), y_train, bgr_test.copy(), y_test, model=spec)
    a, b = next(task.train.batches(16)), next(same.train.batches(16))
    assert a["x"].shape == (16, 1, 8, 8) and torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"])
    fine_tune(spec.module, task, TrainConfig(epochs=8, batch_size=32, optimizer="adamw", lr=1e-2), device="cpu",
              progress=False)
    scores = evaluate(spec.module, task, "test", device="cpu")
    assert scores["examples"] == 90 and scores["accuracy"] >= 0.9
    with pytest.raises(TicketsError, match="x_test is not one rectangular array"):
        Task.from_numpy("ragged", x_train, y_train, [np.zeros((8, 8)), np.zeros((4, 4))], y_test[:2])
