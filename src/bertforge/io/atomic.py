"""Writing outputs so that a failure never destroys what was there.

Every file is written to a temporary file in the same directory (so the final rename stays on
one file system), flushed to disk with fsync and moved over the target with `os.replace`, which
is atomic on POSIX: a reader sees the old file or the new one, never a half-written one. If
anything fails (a disk full, a text that cannot be encoded, an interrupt), the temporary file is
removed and the old file is left as it was. Whole directories (a prepared data set) are built
beside the target and swapped in at the end; for long jobs (`resumable_directory`) the one being built
survives a failure, so the command run again continues it.

Commands call `check_output_file` / `check_output_dir` before their work, so a typo in an output
path is reported at once instead of after an hour of fine-tuning, and an output that would replace
the command's own input, or a directory of someone else's files, is refused before anything is lost.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from fnmatch import fnmatchcase
from pathlib import Path

from bertforge.errors import InputError

logger = logging.getLogger(__name__)


def _where(path: Path, option: str | None) -> str:
    """The culprit of a message: the path, after the option that named it when there is one."""
    return f"{option} {path}" if option else str(path)


def _cannot_write(path: Path, error: OSError) -> InputError:
    return InputError(f"{path}: cannot write ({error.strerror or error})")


def _fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask, read from /proc where there is one: os.umask can only read it by
    setting it, which would briefly change it for every other thread."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write to; on a clean exit it is synced and moved to `path`, on an
    exception it is removed and `path` is untouched."""
    path = Path(path)
    try:
        # The target's suffix stays last: writers that choose a format by suffix (matplotlib) still can.
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    except OSError as e:
        raise _cannot_write(path, e) from None
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private (0600); a plain open() would not
        os.replace(tmp, path)
    except OSError as e:
        raise _cannot_write(path, e) from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_directory(path.parent)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    """UTF-8 text; a string that cannot be encoded (a lone surrogate) fails before `path` changes."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, value, **dumps_options) -> None:
    """One JSON document (non-ASCII kept as is, a newline at the end)."""
    write_text(path, json.dumps(value, ensure_ascii=False, **dumps_options) + "\n")


def write_jsonl(path: str | Path, records: Iterable, **dumps_options) -> None:
    """One JSON value a line, streamed to the temporary file."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False, **dumps_options) + "\n")


def save_npy(path: str | Path, array) -> None:
    """A NumPy array as `.npy` (written to an open file, so NumPy adds no second suffix)."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """A fresh directory beside `path` to build in; on a clean exit it replaces `path` (an old
    directory there is moved aside, then deleted), on an exception it is deleted and `path` is
    untouched. The swap is two renames: a crash between them leaves the old directory under a
    `.old` name beside the target, never a half-built one at the target."""
    path = Path(path).absolute()
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a directory")
    created = [parent for parent in path.parents if not parent.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        os.chmod(build, 0o777 & ~_umask())  # mkdtemp makes it private (0700); a plain mkdir would not
    except OSError as e:
        raise _cannot_write(path, e) from None
    done = False
    try:
        yield build
        _swap_in(build, path)
        done = True
    except OSError as e:
        raise _cannot_write(path, e) from None
    finally:
        if build.exists():
            shutil.rmtree(build, ignore_errors=True)
        if not done:  # the parents made for it go too: a failed command leaves no empty directories
            for parent in created:
                try:
                    parent.rmdir()
                except OSError:
                    break


def _swap_in(build: Path, path: Path) -> None:
    """Two renames: a crash between them leaves the old directory under a `.old` name beside the target."""
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
        os.replace(path, old / path.name)
    os.replace(build, path)
    _fsync_directory(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


RESUME_MARKER = "_resume.json"


@contextmanager
def resumable_directory(path: str | Path, fingerprint: dict) -> Iterator[Path]:
    """`atomic_directory` for long jobs: the directory it builds in keeps its files when the command fails
    or is stopped. It has a fixed name beside `path` (`.NAME.partial`) and records `fingerprint` (what the
    files depend on), so the same command run again finds the files it finished and makes only the rest;
    one made with another fingerprint is emptied first. Each file must appear whole (`atomic_path`)."""
    path = Path(path).absolute()
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a directory")
    build, fingerprint = path.parent / f".{path.name}.partial", json.loads(json.dumps(fingerprint))
    marker = build / RESUME_MARKER
    try:
        if build.is_dir():
            try:
                same = json.loads(marker.read_text(encoding="utf-8")) == fingerprint
            except (OSError, ValueError):
                same = False
            if not same:
                logger.warning("%s holds the unfinished output of another run: it is started afresh", build)
                shutil.rmtree(build)
        build.mkdir(parents=True, exist_ok=True)
        for stray in build.glob(".*"):  # an atomic write cut short by a kill
            stray.unlink()
        if not marker.exists():
            write_json(marker, fingerprint)
        yield build
        marker.unlink()
        _swap_in(build, path)
    except OSError as e:
        raise _cannot_write(path, e) from None


def _check_writable(directory: Path, where: str) -> None:
    """Make and remove an entry in `directory`: os.access reads only the permission bits, which pass for
    root on a read-only mount or in /sys, where the command's own mkdir then failed after its work."""
    try:
        os.rmdir(tempfile.mkdtemp(dir=directory, prefix=".bertforge-", suffix=".probe"))
    except OSError as e:
        raise InputError(f"{where}: cannot write in {directory} ({e.strerror or e})") from None


def make_directory(path: str | Path) -> None:
    """`mkdir -p`, failing as the writers here fail: the path and the reason, not a PermissionError."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _cannot_write(Path(path), e) from None


def _check_parent(path: Path, option: str | None) -> None:
    where = _where(path, option)
    parent = path.parent
    if not parent.is_dir():
        problem = f"{parent} is a file, not a directory" if parent.exists() else f"the directory {parent} does not exist"
        raise InputError(f"{where}: {problem}")
    _check_writable(parent, where)


def _check_not_an_input(path: Path, option: str | None, inputs: Iterable) -> None:
    """The output must not be, or hold, a file the command reads: writing it would destroy the input; nor lie
    inside an input folder: writing it would change that input (its run card's fingerprint, the folder a later
    run reads or replaces whole)."""
    target = path.resolve()
    for source in inputs:
        if source is None:
            continue
        if target == Path(source).resolve() or target in Path(source).resolve().parents:
            raise InputError(f"{_where(path, option)}: would overwrite the input {source}; give another output")
        if Path(source).resolve() in target.parents:
            raise InputError(f"{_where(path, option)}: is inside the input {source}, which writing there would "
                             f"change; give an output outside it")


def check_output_file(path: str | Path | None, option: str | None = None, inputs: Iterable = ()) -> None:
    """Fail now, before any work, if `path` could not be written later, or is one of the command's
    `inputs` (`option` names the command-line option in the message)."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{_where(path, option)}: is a directory, not a file")
    _check_parent(path, option)
    _check_not_an_input(path, option, inputs)


def check_output_dir(path: str | Path | None, option: str | None = None, inputs: Iterable = (),
                     holds: str | None = None, only: Iterable[str] = ()) -> None:
    """Fail now if the directory `path` could not be created or filled later, or holds one of the
    command's `inputs`. Where the command replaces the whole directory (`atomic_directory`), `holds`
    is a pattern of the files its output always has (`config.json`, `*.parquet`): a non-empty
    directory with none is someone else's, and is refused rather than deleted. With `only` (file
    names or patterns, `shard-*.npy`), a directory holding anything else is refused too: replacing it
    would delete that."""
    if path is None:
        return
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{_where(path, option)}: exists and is not a directory")
    _check_not_an_input(path, option, inputs)
    if holds is not None and path.is_dir() and any(path.iterdir()) and next(path.glob(holds), None) is None:
        raise InputError(f"{_where(path, option)}: is not empty and holds no {holds}, so it is not an earlier output "
                         f"of this command and would be replaced whole; give a new or empty directory")
    only = tuple(only)
    foreign = sorted(entry.name for entry in path.iterdir() if not any(fnmatchcase(entry.name, name) for name in only)) \
        if only and path.is_dir() else []
    if foreign:
        raise InputError(f"{_where(path, option)}: holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, "
                         f"which this command does not write; replacing the directory would delete it: give a new or "
                         f"empty directory")
    existing = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise InputError(f"{_where(path, option)}: {existing} is not a directory")
    # Creating `path` (or, for `atomic_directory`, the new one beside it) needs write access to
    # the nearest existing directory above it; an existing `path` is written in (a run) or moved (a swap).
    above = existing if existing != path.absolute() else existing.parent
    for directory in (above, *([path] if path.is_dir() else [])):
        _check_writable(directory, _where(path, option))


# --- Parquet --------------------------------------------------------------------------------------

def arrow_table(columns: dict):
    """Columns (name → values) as an Arrow table; a 2-D NumPy array becomes a fixed-size list
    column, one vector a row, which pandas, Polars, DuckDB, Spark and Ray all read as arrays."""
    import numpy as np
    import pyarrow as pa

    arrays = {}
    for name, values in columns.items():
        try:
            if isinstance(values, np.ndarray) and values.ndim == 2:
                flat = pa.array(np.ascontiguousarray(values).reshape(-1))
                arrays[name] = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
            else:
                arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise InputError(f"column {name!r} cannot be stored in Parquet ({e})") from None
    return pa.table(arrays)


def write_parquet(path: str | Path, table) -> None:
    """An Arrow table as one Parquet file."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def output_folder(directory, call: str = "save_pretrained") -> Path:
    """`directory`, made for `call` to write in; not a path, empty, a file or under one, an InputError naming it
    before anything is written."""
    if not isinstance(directory, (str, os.PathLike)):
        raise InputError(f"{call}({directory!r}): give a folder path (str or pathlib.Path)")
    if not str(directory).strip():  # Path("") is ".": the files would land wherever this runs
        raise InputError(f"{call}({directory!r}): an empty path; give a folder (\".\" for the current one)")
    check_output_dir(Path(directory), call)
    make_directory(directory)
    return Path(directory)
