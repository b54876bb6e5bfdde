"""Files that are never half-written: the one atomic writer, JSON in and out, and rows as CSV + JSON.

Every file ``tickets`` writes goes through ``atomic_write``: the bytes go to a temporary file in the target's
directory (``.<name>.<random>.tmp``), are flushed and fsync-ed, get the mode an ordinary ``open()`` would give
(``0o666`` minus the user's umask, not ``mkstemp``'s private ``0o600``), and are renamed onto the target, so a
reader sees the old file or the whole new one, never a torn one. A killed writer can leave its temporary file
behind; ``remove_stale_temporaries`` clears those on the next run.

Under data-parallel training (torchrun, an initialised ``torch.distributed`` process group) only rank 0 writes:
``atomic_write`` — and so every writer here — does nothing on ranks > 0 (``tickets.runtime.is_main_process``).
Every rank computes the same bytes, so one copy is enough, and N processes renaming onto one path are avoided.
A rank that must read what rank 0 wrote waits for it with ``tickets.runtime.barrier()`` first.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from tickets.errors import TicketsError
from tickets.runtime import is_main_process

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


class TargetIsDirectory(TicketsError, IsADirectoryError):
    """``atomic_write`` was asked to write a file where a directory is: one line naming the path and the fix. A
    TicketsError (the CLI prints it and exits 2) that is also an IsADirectoryError for callers catching OSError."""

    def __init__(self, path: Path):
        self.message = (f"cannot write {path}: it is a directory, not a file: give a file name (a path inside it, "
                        f"{path}/<name>, or another path)")
        super().__init__(self.message)
        self.errno, self.strerror, self.filename = errno.EISDIR, os.strerror(errno.EISDIR), str(path)

    def __str__(self) -> str:
        return self.message


CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".th", ".bin", ".ckpt")


def require_weights_file(path: str | os.PathLike, flag: str = "--weights") -> Path:
    """``path`` as a Path when it names a regular file. TicketsError (one line) otherwise: "not found", or, for a
    folder, that it is a directory and which checkpoint files (``CHECKPOINT_SUFFIXES``) in it to pass instead.
    ``flag``: the option the path came from, for the message."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
        listed = f": pass a file in it ({', '.join(inside[:3])}{' …' if len(inside) > 3 else ''})" if inside else \
            ": pass a checkpoint file"
        raise TicketsError(f"{flag} {str(path)!r} is a directory, not a checkpoint file{listed}")
    raise TicketsError(f"weights file {str(path)!r} not found: check {flag}")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` to fill a temporary file, then rename it onto ``path``.

    The parent directory is created. ``path`` an existing directory: :class:`TargetIsDirectory` (one line naming
    ``path``, before anything is written; renaming onto a directory would fail naming the temporary file instead).
    Raises whatever ``write`` or the file system raises (OSError for a full disk or a read-only directory); the
    temporary file is removed then. On ranks > 0 of an initialised
    ``torch.distributed`` group it does nothing at all (``write`` is not called): rank 0 alone writes."""
    if not is_main_process():
        return
    path = Path(path)
    if path.is_dir():
        raise TargetIsDirectory(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        try:
            write(Path(tmp))
        except RuntimeError as exc:  # torch.save / safetensors report a failed write as a RuntimeError
            raise _write_error(exc, path, Path(tmp)) from None
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_error(exc: RuntimeError, path: Path, tmp: Path) -> BaseException:
    """A library's RuntimeError while writing (torch.save reports "unexpected pos" / "file write failed") → the
    OSError it stands for: the file-size limit (``ulimit -f``), a full disk, or an I/O error."""
    import resource
    import shutil

    text = str(exc).lower()
    if not any(word in text for word in ("write", "space", "inline_container", "unexpected pos")):
        return exc
    try:
        size = os.path.getsize(tmp)
    except OSError:
        size = 0
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        full = shutil.disk_usage(path.parent).free < 64 * 1024 * 1024
    except OSError:
        full = False
    if soft != resource.RLIM_INFINITY and size >= 0.9 * soft:
        code = errno.EFBIG
    elif full or "space" in text:
        code = errno.ENOSPC
    else:
        code = errno.EIO
    return OSError(code, os.strerror(code), str(path))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode())


def json_default(obj: Any) -> Any:
    """JSON for the few non-JSON types results hold: paths (as text) and tensors (as lists)."""
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # torch tensors and numpy arrays / scalars, without importing either
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as indented, key-sorted JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file (OSError / ValueError propagate: callers decide whether a bad file is fatal)."""
    return json.loads(Path(path).read_text())


def flatten(record: dict, prefix: str = "") -> dict:
    """Nested dicts → one level, keys joined with '.'; a ``(mean, std, n)`` tuple → ``key_mean/_std/_n``."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, tuple) and len(value) == 3:
            out[f"{name}_mean"], out[f"{name}_std"], out[f"{name}_n"] = value
        else:
            out[name] = value
    return out


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return value


def write_rows(rows: Iterable[dict], stem: str | os.PathLike) -> list[Path]:
    """``<stem>.json`` (the rows as given) and ``<stem>.csv`` (flattened, columns in first-seen order), both
    atomically; returns the two paths. The one rows writer of reports and studies."""
    rows = list(rows)
    stem = Path(stem)
    json_path, csv_path = stem.parent / f"{stem.name}.json", stem.parent / f"{stem.name}.csv"
    atomic_write_text(json_path, json.dumps(rows, indent=1, sort_keys=True, default=json_default) + "\n")
    flat = [flatten(r) for r in rows]
    columns = list(dict.fromkeys(k for r in flat for k in r))
    buf = io.StringIO()
    if columns:
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for r in flat:
            writer.writerow({k: _csv_cell(r.get(k)) for k in columns})
    atomic_write_text(csv_path, buf.getvalue())
    return [csv_path, json_path]


def remove_stale_temporaries(directory: str | os.PathLike, *, recursive: bool = True) -> int:
    """Delete ``.<name>.*.tmp`` files a killed ``atomic_write`` left in ``directory``; returns how many. Call it
    while holding the run's lock (no live writer); a no-op on data-parallel ranks > 0."""
    root = Path(directory)
    if not root.is_dir() or not is_main_process():
        return 0
    found = root.rglob(f".*{TMP_SUFFIX}") if recursive else root.glob(f".*{TMP_SUFFIX}")
    n = 0
    for p in found:
        try:
            p.unlink()
            n += 1
        except OSError:
            pass
    return n
