"""Output files of the command lines and APIs: checked before any work, never overwritten unless asked, written
atomically with the permissions any other new file gets.

A write goes to a temporary file in the target's own folder and is renamed over the target (`os.replace`, atomic on
one file system), so a crash or an error leaves either the old file or the new one, never half of one.  The temporary
file is made readable the way `open(path, "w")` would make it (0666 minus the umask, typically 0644; `mkstemp`
alone gives 0600), or keeps the mode of the file it replaces.  Errors name the target, not the temporary file.

One rule for every output path (`--out`, `--dot`, `project`): missing parent folders are created, as ultralytics
creates `project/name`, but only when the output is written, after the work; the check before the work creates and
removes a temporary file in the nearest existing folder (`probe_writable`), which, unlike `os.access`, also refuses
root on a read-only mount or a pseudo file system such as /proc.  A refused command leaves no folder behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from .errors import OutputError

ErrorType = Callable[[str], Exception]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode a new file (0666) or folder (0777) gets under the current umask."""
    return (0o777 if directory else 0o666) & ~_umask()


def _check_writable_folder(path: Path, error: ErrorType) -> None:
    """`error` unless `path`'s nearest existing ancestor is a folder this process may create entries in."""
    parent = path.parent.resolve() if str(path.parent) else Path.cwd()
    probe = parent
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise error(f"{path}: cannot write here, {probe} is a file, not a folder")
    probe_writable(probe, what=str(path), error=error)


def probe_writable(folder: str | os.PathLike, *, what: str | None = None, error: ErrorType = OutputError) -> None:
    """`error` unless a file can be created (and removed) in the existing `folder`: a real write, since os.access says
    yes to root on a read-only mount or /proc.  `what` names the user's output in the message (default: `folder`)."""
    folder = Path(folder)
    try:
        with tempfile.TemporaryFile(prefix=".write-probe-", dir=folder):
            pass
    except OSError as exc:
        raise error(f"{what or folder}: cannot write in folder {folder}, creating a file there failed "
                    f"({exc.strerror or exc}); choose a writable location") from None


def check_new_file(path: str | os.PathLike, *, overwrite: bool = False, flag: str = "--force",
                   error: ErrorType = OutputError) -> Path:
    """Check before any work that `path` can be written as a file: not a folder, not an existing file unless
    `overwrite` (the message names `flag`, the way to allow it), in a writable folder.  Returns it as a Path."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise error(f"{path} exists; choose another name or pass {flag} to replace it")
    _check_writable_folder(path, error)
    return path


def check_new_dir(path: str | os.PathLike, *, exist_ok: bool = False, flag: str = "--force",
                  error: ErrorType = OutputError) -> Path:
    """Check before any work that `path` can be an output folder: not a file, and not an existing folder with
    something in it unless `exist_ok` (the message names `flag`); its parent writable.  Returns it as a Path."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise error(f"{path} is a file; an output folder is needed here")
    if path.is_dir() and any(path.iterdir()) and not exist_ok:
        raise error(f"{path} exists and is not empty; choose a new folder or pass {flag} to replace its files")
    _check_writable_folder(path / "x" if path.is_dir() else path, error)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, error: ErrorType = OutputError) -> Iterator[Path]:
    """A temporary path next to `path` to write to; on success it replaces `path` atomically (usual permissions),
    on failure it is removed and `path` is untouched.  OSErrors are re-raised as `error` naming `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise error(f"{path}: cannot write ({exc.strerror or exc})") from exc
    tmp = Path(name)
    try:
        yield tmp
        mode = path.stat().st_mode & 0o7777 if path.exists() else default_mode()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        raise error(f"{path}: cannot write ({exc.strerror or exc})") from exc
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str, *, error: ErrorType = OutputError) -> Path:
    """Write `text` to `path` atomically (see `atomic_path`)."""
    with atomic_path(path, error=error) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, error: ErrorType = OutputError,
               keep_existing: bool = False) -> Iterator[Path]:
    """A temporary folder next to `path` to fill; on success it is renamed to `path` (which must not exist, or be
    empty) with the usual folder permissions, on failure it is removed with everything in it.  With
    `keep_existing`, a `path` that another process filled meanwhile is kept and ours discarded (a cache)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise error(f"{path}: cannot create the folder ({exc.strerror or exc})") from exc
    try:
        yield tmp
        os.chmod(tmp, default_mode(directory=True))
        if keep_existing and path.is_dir() and any(path.iterdir()):
            return  # another process finished first: keep theirs
        if path.is_dir():
            path.rmdir()  # empty (checked by check_new_dir); a folder with files in it makes this fail
        try:
            os.replace(tmp, path)
        except OSError:
            if not (keep_existing and path.is_dir()):
                raise
    except OSError as exc:
        raise error(f"{path}: cannot write the folder ({exc.strerror or exc})") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
