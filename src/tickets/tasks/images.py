"""Image classification tasks: CIFAR-10/100, MNIST, Fashion-MNIST, scikit-learn digits.

Files under the data root (``--data-root`` / ``TICKETS_DATA``):

- ``<root>/<cifar10|cifar100|mnist|fashion_mnist>/<same>.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test``
  (x: uint8 N×H×W×C) and ``classes``; read with ``allow_pickle=False``.
- CIFAR also in the official python layout: ``cifar-10-batches-py/`` / ``cifar-100-python/`` (beside the npz folder
  or at the root) or the ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` tarball (read in memory, never
  extracted). Those batches are pickles: they are read with a restricted unpickler that resolves only the few
  numpy globals an array needs, so a crafted file cannot run code. ``download_cifar`` fetches the tarball.
- ``digits``, ``digits-0-4``, ``digits-5-9``: scikit-learn's 8×8 digits (shipped with scikit-learn). They have no
  official test split, so a fixed stratified 20% (seed 0) is the test set; the two halves remap labels to 0..4.

Splits: ``train`` = the seeded ``train_size`` subset of the training split minus ``val`` (carved off with
``val_size`` / ``val_fraction``, seeded by the run seed); ``test`` = the official test split in a fixed shuffled
order (seed 0, independent of the run seed) so that ``limit`` never yields a single class. ``limit`` applies to
val and test. Images stay uint8 in memory; ``batches`` converts to float [0, 1], augments (random crop with zero
padding, 4 px at 32 px and scaled with the image side, + horizontal flip except on digit sets) at the native size,
then matches the model's channels (1→3 replicated, 3→1 averaged) and side (bilinear, antialiased when shrinking).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from tickets.errors import TicketsError
from tickets.fileio import atomic_write
from tickets.tasks.base import Batch, DataConfig, Task, carve

DIGIT_TASKS = ("digits", "digits-0-4", "digits-5-9")
FILE_TASKS = {"cifar10": "cifar10", "cifar100": "cifar100", "mnist": "mnist", "fashion-mnist": "fashion_mnist"}
IMAGE_TASKS = (*FILE_TASKS, *DIGIT_TASKS)
NO_FLIP = {"mnist", *DIGIT_TASKS}  # digit shapes are not mirror-symmetric
EVAL_ORDER_SEED = 0
DIGITS_TEST_FRACTION = 0.2

CIFAR = {
    "cifar10": {
        "dir": "cifar-10-batches-py",
        "tarball": "cifar-10-python.tar.gz",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "labels": "labels",
        "names": "label_names",
    },
    "cifar100": {
        "dir": "cifar-100-python",
        "tarball": "cifar-100-python.tar.gz",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "labels": "fine_labels",
        "names": "fine_label_names",
    },
}


# ----------------------------------------------------------------------------------------------------------------
# splits, metric, loss


class ImageSplit:
    """One split of uint8 images (N×C×H×W) and int64 labels, in memory, in a fixed order."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        scale: float = 255.0,
        size: int | None = None,
        channels: int | None = None,
        crop_pad: int = 0,
        flip: bool = False,
    ):
        if x.dim() != 4 or x.shape[0] != y.shape[0]:
            raise ValueError(f"expected N×C×H×W images and N labels, got {tuple(x.shape)} and {tuple(y.shape)}")
        self.x = x
        self.y = y.long()
        self.scale = float(scale)  # pixel value that maps to 1.0
        self.size = size  # output side (None: native)
        self.channels = channels  # output channels (None: native)
        self.crop_pad = crop_pad  # random-crop padding at the native size (0: no crop)
        self.flip = flip  # horizontal flips allowed

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def _like(self, x: torch.Tensor, y: torch.Tensor) -> "ImageSplit":
        return ImageSplit(
            x, y, scale=self.scale, size=self.size, channels=self.channels, crop_pad=self.crop_pad, flip=self.flip
        )

    def limit(self, n: int | None) -> "ImageSplit":
        if n is None or n >= len(self):
            return self
        if n < 0:
            raise TicketsError(f"limit must be >= 0, got {n}")
        return self._like(self.x[:n], self.y[:n])

    def subset(self, index: torch.Tensor) -> "ImageSplit":
        return self._like(self.x[index], self.y[index])

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        augment: bool = False,
        drop_last: bool = False,
    ) -> Iterator[Batch]:
        if batch_size < 1:
            raise TicketsError(f"batch size must be >= 1, got {batch_size}")
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else None
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            if order is None:
                xb, yb = self.x[start : start + batch_size], self.y[start : start + batch_size]
            else:
                idx = order[start : start + batch_size]
                xb, yb = self.x[idx], self.y[idx]
            yield {"x": self.prepare(xb, augment=augment, generator=generator), "y": yb}

    def prepare(self, xb: torch.Tensor, *, augment: bool = False, generator: torch.Generator | None = None):
        """uint8 images → float [0, 1] at the model's channels and size (augmented if asked and allowed)."""
        x = xb.float().div_(self.scale)
        if augment:
            if self.crop_pad > 0:
                x = random_crop(x, self.crop_pad, generator)
            if self.flip:
                x = random_flip(x, generator)
        return match_model(x, self.size, self.channels)


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad by ``pad`` and crop back to the original size at a random offset per image."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def match_model(x: torch.Tensor, size: int | None, channels: int | None) -> torch.Tensor:
    """Average 3→1 channels, resize (bilinear; antialiased when shrinking), replicate 1→3 channels."""
    c = x.shape[1]
    if channels is not None and channels != c:
        if channels == 1:
            x = x.mean(dim=1, keepdim=True)
        elif c != 1:
            raise TicketsError(f"cannot map {c}-channel images to a {channels}-channel model")
    if size is not None and (x.shape[-2], x.shape[-1]) != (size, size):
        shrink = size < x.shape[-2] or size < x.shape[-1]
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    if channels is not None and x.shape[1] != channels:  # 1 → channels
        x = x.expand(-1, channels, -1, -1).contiguous()
    return x


class Accuracy:
    """Top-1 accuracy and mean cross-entropy over the batches seen, and ``predicted``: how many examples were
    predicted as each class, in class-id order (``tickets.diagnostics.degenerate_predictions`` reads it; absent
    when nothing was seen)."""

    def __init__(self) -> None:
        self.correct = 0
        self.total = 0
        self.loss_sum = 0.0
        self.counts: torch.Tensor | None = None  # int64 [classes], on the CPU

    def update(self, outputs: torch.Tensor, batch: Batch) -> None:
        y = batch["y"].to(outputs.device)
        with torch.no_grad():
            self.loss_sum += float(F.cross_entropy(outputs.float(), y, reduction="sum"))
            pred = outputs.argmax(dim=-1)
            self.correct += int((pred == y).sum())
            counts = torch.bincount(pred.reshape(-1), minlength=outputs.shape[-1]).cpu()
        self.counts = counts if self.counts is None else _add_counts(self.counts, counts)
        self.total += int(y.numel())

    def compute(self) -> dict[str, Any]:
        if self.total == 0:
            return {"accuracy": float("nan"), "loss": float("nan")}
        return {"accuracy": self.correct / self.total, "loss": self.loss_sum / self.total,
                "predicted": self.counts.tolist() if self.counts is not None else []}


def _add_counts(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    n = max(len(a), len(b))
    return F.pad(a, (0, n - len(a))) + F.pad(b, (0, n - len(b)))


def cross_entropy(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
    return F.cross_entropy(outputs, batch["y"].to(outputs.device))


# ----------------------------------------------------------------------------------------------------------------
# raw data


@dataclass
class RawImages:
    x_train: torch.Tensor  # uint8 N×C×H×W
    y_train: torch.Tensor  # int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    scale: float = 255.0
    files: list[str] = field(default_factory=list)
    source: str = "npz"


def _nchw(x: np.ndarray, what: str) -> torch.Tensor:
    if x.dtype != np.uint8:
        raise TicketsError(f"{what}: images must be uint8, got {x.dtype}: rebuild the file")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise TicketsError(f"{what}: images must be N×H×W×C, got shape {x.shape}: rebuild the file")
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _labels(y: np.ndarray, n: int, num_classes: int, what: str) -> torch.Tensor:
    y = np.asarray(y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise TicketsError(f"{what}: labels must be {n} integers, got {y.dtype} {y.shape}: rebuild the file")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise TicketsError(f"{what}: labels outside 0..{num_classes - 1}: rebuild the file")
    return torch.from_numpy(y.astype(np.int64))


def from_arrays(x_train: Any, y_train: Any, x_test: Any, y_test: Any, what: str):
    """(x_train, x_test) as N×C×H×W tensors, (y_train, y_test) as int64, and the pixel scale (255 for uint8, 1 for
    floats in [0, 1]) from user arrays (N×H×W×C or N×C×H×W; numpy or torch). TicketsError naming the problem."""
    xs, ys = [], []
    scale = None
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        x = torch.as_tensor(np.ascontiguousarray(x) if not isinstance(x, torch.Tensor) else x)
        y = torch.as_tensor(np.ascontiguousarray(y) if not isinstance(y, torch.Tensor) else y)
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4:
            raise TicketsError(f"task {what!r}: {split} images must be N×H×W×C or N×C×H×W, got {tuple(x.shape)}")
        if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
            x = x.permute(0, 3, 1, 2)
        if y.dim() != 1 or y.shape[0] != x.shape[0] or y.is_floating_point() or y.dtype == torch.bool:
            raise TicketsError(f"task {what!r}: {split} labels must be {x.shape[0]} integer class ids, got "
                               f"{y.dtype} {tuple(y.shape)}")
        if len(y) and int(y.min()) < 0:
            raise TicketsError(f"task {what!r}: {split} labels must be >= 0 class ids")
        this = 255.0 if x.dtype == torch.uint8 else 1.0
        if x.is_floating_point() and len(x) and (float(x.min()) < 0 or float(x.max()) > 1):
            raise TicketsError(f"task {what!r}: float {split} images must lie in [0, 1] (or pass uint8 0..255)")
        if scale is not None and this != scale:
            raise TicketsError(f"task {what!r}: train and test images must share a dtype (uint8 or float)")
        scale = this
        xs.append(x.contiguous())
        ys.append(y.long())
    return xs, ys, scale


def load_npz(path: Path) -> RawImages:
    what = f"data file {str(path)!r}"
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in data.files]
            if missing:
                raise TicketsError(f"{what} lacks {', '.join(missing)}: rebuild it (keys x_train, y_train, ...)")
            arrays = {k: data[k] for k in ("x_train", "y_train", "x_test", "y_test")}
            classes = [str(c) for c in data["classes"]] if "classes" in data.files else None
    except TicketsError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise TicketsError(f"{what} could not be read ({exc}): replace it") from exc
    y_all = np.concatenate([arrays["y_train"].ravel(), arrays["y_test"].ravel()])
    if classes is None:
        classes = [str(i) for i in range(int(y_all.max()) + 1 if y_all.size else 0)]
    k = len(classes)
    x_train, x_test = _nchw(arrays["x_train"], what), _nchw(arrays["x_test"], what)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise TicketsError(f"{what}: train and test images differ in shape: rebuild it")
    return RawImages(
        x_train=x_train,
        y_train=_labels(arrays["y_train"], x_train.shape[0], k, what),
        x_test=x_test,
        y_test=_labels(arrays["y_test"], x_test.shape[0], k, what),
        classes=classes,
        files=[str(path)],
        source="npz",
    )


# --- restricted unpickling of the CIFAR python batches ---------------------------------------------------------


def _numpy_reconstruct() -> Callable:
    return np.ndarray.__reduce__(np.zeros(1, np.uint8))[0]  # numpy(._core).multiarray._reconstruct


def _numpy_frombuffer() -> Callable:
    return np.zeros(1, np.uint8).__reduce_ex__(5)[0]  # numpy(._core).numeric._frombuffer


def _safe_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError("object arrays are not allowed")
    return dtype


def _latin1_encode(text: Any, encoding: str = "latin1", *rest: Any) -> bytes:
    # Python 3 pickles bytes at protocol < 3 as _codecs.encode(str, "latin1"): allow exactly that
    if not isinstance(text, str) or encoding.lower().replace("-", "") not in ("latin1", "iso88591") or rest:
        raise pickle.UnpicklingError("only _codecs.encode(str, 'latin1') is allowed")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    reconstruct, frombuffer = _numpy_reconstruct(), _numpy_frombuffer()
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _safe_dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{mod}.numeric", "_frombuffer")] = frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: every other global is refused."""

    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data file") from None


def safe_unpickle(blob: bytes, what: str) -> Any:
    """Unpickle a CIFAR batch (dict of arrays / lists / bytes) without running code; TicketsError otherwise."""
    try:
        obj = RestrictedUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, TypeError from crafted reductions, ...
        raise TicketsError(f"{what} is not a valid CIFAR batch ({type(exc).__name__}: {exc}): replace it") from exc
    if not isinstance(obj, dict):
        raise TicketsError(f"{what} is not a valid CIFAR batch (not a dict): replace it")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _cifar_batches(read: Callable[[str], bytes], which: str, where: str) -> RawImages:
    spec = CIFAR[which]

    def load(names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for fname in names:
            what = f"{where}/{fname}"
            batch = safe_unpickle(read(fname), what)
            if "data" not in batch or spec["labels"] not in batch:
                raise TicketsError(f"{what} lacks 'data' or {spec['labels']!r}: replace it")
            data = np.asarray(batch["data"])
            labels = np.asarray(batch[spec["labels"]], dtype=np.int64)
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
                raise TicketsError(f"{what}: expected uint8 N×3072 data and N labels: replace it")
            xs.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
            ys.append(torch.from_numpy(labels))
        return torch.cat(xs), torch.cat(ys)

    x_train, y_train = load(spec["train"])
    x_test, y_test = load(spec["test"])
    meta = safe_unpickle(read(spec["meta"]), f"{where}/{spec['meta']}")
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get(spec["names"], [])]
    k = len(classes) or int(max(y_train.max(), y_test.max())) + 1
    for y in (y_train, y_test):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
            raise TicketsError(f"{where}: labels outside 0..{k - 1}: replace the files")
    return RawImages(x_train, y_train, x_test, y_test, classes or [str(i) for i in range(k)], files=[where])


def load_cifar_dir(path: Path, which: str) -> RawImages:
    def read(fname: str) -> bytes:
        f = path / fname
        if not f.is_file():
            raise TicketsError(f"CIFAR batch {str(f)!r} is missing: re-extract {CIFAR[which]['tarball']}")
        return f.read_bytes()

    raw = _cifar_batches(read, which, str(path))
    raw.source = "cifar-python-dir"
    return raw


def load_cifar_tarball(path: Path, which: str) -> RawImages:
    prefix = CIFAR[which]["dir"]
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {m.name.lstrip("./"): m for m in tar.getmembers() if m.isfile()}

            def read(fname: str) -> bytes:
                member = members.get(f"{prefix}/{fname}")
                fobj = tar.extractfile(member) if member is not None else None
                if fobj is None:
                    raise TicketsError(f"{str(path)!r} lacks {prefix}/{fname}: download it again (download_cifar)")
                return fobj.read()

            raw = _cifar_batches(read, which, f"{path}:{prefix}")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise TicketsError(f"{str(path)!r} is not a readable tarball ({exc}): download it again") from exc
    raw.source = "cifar-tarball"
    raw.files = [str(path)]
    return raw


def download_cifar(
    root: str | os.PathLike,
    which: str = "cifar10",
    *,
    url: str | None = None,
    md5: str | None = None,
    sha256: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Fetch the official CIFAR python tarball to ``<root>/<cifar10|cifar100>/<name>.tar.gz`` (where ``load_task``
    finds it), checking its checksum (md5 of the official file unless ``url`` / ``md5`` / ``sha256`` say otherwise)
    and writing it atomically. Returns the path; an existing file with the right checksum is kept."""
    if which not in CIFAR:
        raise TicketsError(f"unknown CIFAR set {which!r}: choose cifar10 or cifar100")
    spec = CIFAR[which]
    if url is None:
        url, md5 = spec["url"], md5 or spec["md5"]
    dest = Path(root).expanduser() / which / spec["tarball"]
    if dest.is_file() and _checksums_ok(_hash_file(dest), md5, sha256):
        return dest
    def fetch(tmp: Path) -> None:
        hashes = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}
        with open(tmp, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - fixed/official URL
                    while chunk := resp.read(1 << 20):
                        out.write(chunk)
                        for h in hashes.values():
                            h.update(chunk)
            except OSError as exc:  # URLError is an OSError
                raise TicketsError(
                    f"could not download {url} ({exc}): check the connection, or place {spec['tarball']} "
                    f"under {dest.parent} by hand"
                ) from exc
        digests = {k: h.hexdigest() for k, h in hashes.items()}
        if not _checksums_ok(digests, md5, sha256):
            raise TicketsError(
                f"checksum mismatch for {url} (md5 {digests['md5']}, expected {md5 or sha256}): "
                "the download is corrupt or not the official file; try again"
            )

    atomic_write(dest, fetch)
    return dest


def _hash_file(path: Path) -> dict[str, str]:
    hashes = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            for h in hashes.values():
                h.update(chunk)
    return {k: h.hexdigest() for k, h in hashes.items()}


def _checksums_ok(digests: dict[str, str], md5: str | None, sha256: str | None) -> bool:
    if md5 is None and sha256 is None:
        return True
    return (md5 is None or digests["md5"] == md5.lower()) and (sha256 is None or digests["sha256"] == sha256.lower())


def _file_candidates(root: Path, name: str) -> list[tuple[Path, str]]:
    folder = FILE_TASKS[name]
    out = [(root / folder / f"{folder}.npz", "npz")]
    if name in CIFAR:
        spec = CIFAR[name]
        out += [
            (root / folder / spec["dir"], "dir"),
            (root / spec["dir"], "dir"),
            (root / folder / spec["tarball"], "tar"),
            (root / spec["tarball"], "tar"),
        ]
    return out


def load_raw_file_task(name: str, data_root: str | os.PathLike | None) -> RawImages:
    from tickets.paths import data_root as resolve_root

    root = resolve_root(data_root)
    assert root is not None
    candidates = _file_candidates(root, name)
    for path, kind in candidates:
        if kind == "npz" and path.is_file():
            return load_npz(path)
        if kind == "dir" and path.is_dir():
            return load_cifar_dir(path, name)
        if kind == "tar" and path.is_file():
            return load_cifar_tarball(path, name)
    looked = " or ".join(repr(str(p)) for p, _ in candidates)
    hint = f", or fetch it with tickets.tasks.images.download_cifar(root, {name!r})" if name in CIFAR else ""
    raise TicketsError(
        f"data for task {name!r} not found: expected {looked}; "
        f"point --data-root or TICKETS_DATA at the folder holding {FILE_TASKS[name]}/{hint}"
    )


def train_split_size(name: str, data_root: str | os.PathLike | None = None) -> int | None:
    """Examples in task ``name``'s training split, read cheaply (the npz labels only; digits in memory), so an
    experiment's ``train_size`` is checked before anything runs. None when only a full load would tell."""
    if name in DIGIT_TASKS:
        return len(load_raw_digits(name).y_train)
    from tickets.paths import data_root as resolve_root

    root = resolve_root(data_root, required=False)
    if root is None or name not in FILE_TASKS:
        return None
    path = _file_candidates(root, name)[0][0]
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return int(data["y_train"].shape[0]) if "y_train" in data.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def load_raw_digits(name: str) -> RawImages:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = np.rint(digits.images).astype(np.uint8)[:, None]  # N×1×8×8, values 0..16
    y = digits.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=DIGITS_TEST_FRACTION, stratify=y, random_state=0
    )
    idx_train, idx_test = np.sort(idx_train), np.sort(idx_test)
    lo, hi = {"digits": (0, 9), "digits-0-4": (0, 4), "digits-5-9": (5, 9)}[name]

    def part(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = idx[(y[idx] >= lo) & (y[idx] <= hi)]
        return torch.from_numpy(x[idx].copy()), torch.from_numpy(y[idx] - lo)

    x_train, y_train = part(idx_train)
    x_test, y_test = part(idx_test)
    classes = [str(d) for d in range(lo, hi + 1)]
    return RawImages(x_train, y_train, x_test, y_test, classes, scale=16.0, files=["sklearn.datasets.load_digits"],
                     source="sklearn")


# ----------------------------------------------------------------------------------------------------------------
# the task


def load_image_task(
    name: str,
    *,
    model: Any = None,
    data_root: str | os.PathLike | None = None,
    data: DataConfig = DataConfig(),
    seed: int = 0,
) -> Task:
    """Image task ``name`` with its inputs matched to ``model`` (a ModelSpec; None keeps the native size)."""
    if name in DIGIT_TASKS:
        raw = load_raw_digits(name)
    elif name in FILE_TASKS:
        raw = load_raw_file_task(name, data_root)
    else:
        raise TicketsError(f"unknown image task {name!r}: choose one of {', '.join(IMAGE_TASKS)}")
    return build_image_task(name, raw, model=model, data=data, seed=seed)


def build_image_task(name: str, raw: RawImages, *, model: Any = None, data: DataConfig = DataConfig(),
                     seed: int = 0, flip: bool | None = None) -> Task:
    train_pos, val_pos = carve(len(raw.y_train), data, seed, raw.y_train.numpy(), task=name)
    train_idx, val_idx = torch.from_numpy(np.sort(train_pos)), torch.from_numpy(val_pos)
    test_order = torch.randperm(len(raw.y_test), generator=torch.Generator().manual_seed(EVAL_ORDER_SEED))

    side = int(raw.x_train.shape[-1])
    size = getattr(model, "input_size", None)
    channels = getattr(model, "in_channels", None)
    crop_pad = max(1, round(4 * side / 32)) if data.augment else 0
    flip = data.augment and (name not in NO_FLIP if flip is None else flip)
    kw = dict(scale=raw.scale, size=size, channels=channels, crop_pad=crop_pad, flip=flip)
    train = ImageSplit(raw.x_train[train_idx], raw.y_train[train_idx], **kw)
    val = ImageSplit(raw.x_train[val_idx], raw.y_train[val_idx], **kw).limit(data.limit)
    test = ImageSplit(raw.x_test[test_order], raw.y_test[test_order], **kw).limit(data.limit)
    return Task(
        name=name,
        kind="image",
        num_outputs=len(raw.classes),
        train=train,
        val=val,
        test=test,
        primary_metric="accuracy",
        new_metric=Accuracy,
        loss_fn=cross_entropy,
        info={
            "files": list(raw.files),
            "source": raw.source,
            "classes": list(raw.classes),
            "sizes": {"train": len(train), "val": len(val), "test": len(test)},
            "native_shape": [int(s) for s in raw.x_train.shape[1:]],
            "input_size": size,
            "in_channels": channels,
            "augment": {"crop_pad": crop_pad, "flip": flip},
            "seed": seed,
        },
    )
