"""Atomic file writes: a crash or a kill never leaves a half-written output behind.

Every file vtok writes (weights, checkpoints, .vtok files, images, reports) goes through here. A
file is written as a hidden temporary sibling, ``.NAME.<random>.tmp``, and renamed onto NAME; a
model folder is written as a temporary sibling folder of the same pattern and swapped in whole.
A kill can still leave such a sibling behind: the next write of the same target removes the ones
over a minute old. Errors name the target, never the temporary sibling nobody asked for.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Collection
from pathlib import Path

__all__ = ["atomic_folder", "atomic_path", "remove_stale_temps", "write_atomic"]

STALE_AFTER_S = 60.0  # younger temporary siblings may belong to a writer still at work
_RANDOM_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")  # tempfile's 8-character names
_leftovers: dict[str, dict[str, list[str]]] = {}  # folder -> target name -> its temporary siblings


def _temp_target(name: str) -> str | None:
    """The target a temporary sibling was made for ('.x.png.k2j4_9ab.tmp' -> 'x.png'), else None."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return None
    target, _, token = name[1:-4].rpartition(".")
    return target if target and len(token) == 8 and set(token) <= _RANDOM_CHARS else None


def _list_temps(folder: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    try:
        names = os.listdir(folder)
    except OSError:
        return found  # an unlistable (or missing) folder: the write itself will say why
    for name in names:
        target = _temp_target(name)
        if target is not None:
            found.setdefault(target, []).append(name)
    return found


def _newest_mtime(path: Path) -> float:
    """A folder being filled changes its entries, not itself: the newest of both counts."""
    times = [path.lstat().st_mtime]
    if path.is_dir() and not path.is_symlink():
        times += [entry.stat(follow_symlinks=False).st_mtime for entry in os.scandir(path)]
    return max(times)


def remove_stale_temps(path: str | os.PathLike) -> None:
    """Remove the temporary siblings of `path` that killed writes left, once over a minute old.

    A kill ends its process, so each folder is listed once per process, at its first write there,
    and later writes look their target up in that listing: writing n files into one folder stays
    O(n), not O(n^2). Cleaning up is a courtesy and never fails a write.
    """
    path = Path(path)
    folder = os.path.abspath(path.parent)
    index = _leftovers.get(folder)
    if index is None:
        index = _leftovers[folder] = _list_temps(folder)
    now = time.time()
    for name in index.pop(path.name, []):
        stale = Path(folder, name)
        try:
            if now - _newest_mtime(stale) < STALE_AFTER_S:
                continue
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink()
        except OSError:
            pass


def _naming(error: BaseException | None, path: Path, tmp: Path | None = None) -> OSError | None:
    """An OSError about a temporary sibling of `path` (or about no file) re-made to name `path`
    (a file inside a temporary folder: the same file inside `path`); None when it names another file."""
    if not isinstance(error, OSError) or error.errno is None:
        return None
    about = None if error.filename is None else Path(os.fsdecode(error.filename))
    if about is None or (tmp is None and _temp_target(about.name) == path.name):
        named = path  # mkstemp/mkdtemp failed: their random name is not known beforehand
    elif tmp is not None and (about == tmp or tmp in about.parents):
        named = path / about.relative_to(tmp)
    else:
        return None
    try:
        return type(error)(error.errno, error.strerror, os.fspath(named))
    except TypeError:  # an OSError subclass with its own constructor
        return OSError(error.errno, error.strerror, os.fspath(named))


def _make_temp(path: Path, folder: bool, shown: Path | None = None) -> Path:
    """A new temporary sibling of `path`; an error names `path` (where the user looks) or `shown`."""
    remove_stale_temps(path)
    try:
        if folder:
            return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        renamed = _naming(e, path)
        if renamed is not None and shown is not None:
            renamed.filename = os.fspath(shown)
        if renamed is None:
            raise
        raise renamed from e
    os.close(fd)
    return Path(name)


def _normal_mode(path: Path, mode: int) -> None:
    """mkstemp and mkdtemp make 0600 / 0700; give the output the permissions a plain write would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


class atomic_path:
    """Context manager yielding a temporary path in the same folder, renamed onto `path` on success."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.tmp = _make_temp(self.path, folder=False)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                _normal_mode(self.tmp, 0o666)
                os.replace(self.tmp, self.path)
                return
            except OSError as e:
                exc = e
        self.tmp.unlink(missing_ok=True)
        renamed = _naming(exc, self.path, self.tmp)  # e.g. a full disk while writing the temporary file
        if renamed is not None:
            raise renamed from exc
        if exc_type is None:
            raise exc


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write bytes or text to `path` (parent folders made) so that it is whole or absent."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)
    return path


class atomic_folder:
    """Context manager yielding an empty temporary sibling folder that replaces the folder `path`
    whole on success, so that `path` holds the old contents or the new ones, never a mix (the
    weights of one model beside the config of another, after a kill or a full disk).

    `owned` names the files the writer defines: an old copy of those is dropped even when the new
    folder lacks it (a prior fitted for other weights). Every other entry of the old folder (a
    README.md model card, a user's notes) is carried over. On Linux the swap is one atomic
    renameat2(RENAME_EXCHANGE); elsewhere two renames leave `path` briefly absent, never half.
    The working directory and mount points cannot be renamed: their files are replaced one by one.
    """

    def __init__(self, path: str | os.PathLike, owned: Collection[str] = ()):
        self.shown = Path(path)  # what errors name
        self.path = Path(os.path.realpath(path))  # a symlinked folder: replace its target, keep the link
        self.owned = set(owned)

    def __enter__(self) -> Path:
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), os.fspath(self.shown))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = _make_temp(self.path, folder=True, shown=self.shown)
        if self.path.is_dir():
            os.chmod(self.tmp, self.path.stat().st_mode & 0o7777)
        else:
            _normal_mode(self.tmp, 0o777)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self._commit()
                return
            except OSError as e:
                exc = e
        shutil.rmtree(self.tmp, ignore_errors=True)
        renamed = _naming(exc, self.shown, self.tmp)
        if renamed is not None:
            raise renamed from exc
        if exc_type is None:
            raise exc

    def _commit(self) -> None:
        if not self.path.is_dir():
            try:
                os.rename(self.tmp, self.path)
                return
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):  # not: made meanwhile by another writer
                    raise
        if _pinned(self.path):
            _replace_files(self.tmp, self.path, self.owned)
            return
        self._carry_over()
        if _exchange(self.tmp, self.path):
            shutil.rmtree(self.tmp, ignore_errors=True)  # it holds the old folder now
        else:
            _swap_by_renames(self.tmp, self.path)

    def _carry_over(self) -> None:
        """Copy the old folder's other entries into the new one (hard links where possible)."""
        for entry in os.scandir(self.path):
            target = self.tmp / entry.name
            if entry.name in self.owned or _temp_target(entry.name) is not None or os.path.lexists(target):
                continue
            if entry.is_symlink():
                os.symlink(os.readlink(entry.path), target)
            elif entry.is_dir():
                shutil.copytree(entry.path, target, symlinks=True)
            else:
                try:
                    os.link(entry.path, target)
                except OSError:
                    shutil.copy2(entry.path, target)


def _pinned(folder: Path) -> bool:
    """Folders that must not be renamed: mount points (rename fails with EBUSY) and the working
    directory or one above it (the process would be left inside the deleted old folder)."""
    try:
        cwd = Path(os.path.realpath(os.getcwd()))
    except OSError:  # no working directory any more
        return os.path.ismount(folder)
    return os.path.ismount(folder) or cwd == folder or folder in cwd.parents


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 with RENAME_EXCHANGE); False where the system
    or the file system cannot, so that the caller falls back to two renames."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library without renameat2 (glibc < 2.28)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(b))


def _swap_by_renames(new: Path, path: Path) -> None:
    old = _make_temp(path, folder=True)  # reserves a fresh name for the old folder ...
    os.rmdir(old)  # ... that a rename can take everywhere (Windows will not rename onto a folder)
    os.rename(path, old)
    try:
        os.rename(new, path)
    except OSError:
        os.rename(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _replace_files(new: Path, path: Path, owned: Collection[str]) -> None:
    """The fallback for a folder that cannot be renamed: each file replaced atomically on its own,
    config.json last; owned files the new contents lack are removed."""
    written = sorted(os.listdir(new), key=lambda name: name == "config.json")
    for name in written:
        os.replace(new / name, path / name)
    for name in set(owned) - set(written):
        (path / name).unlink(missing_ok=True)
    shutil.rmtree(new, ignore_errors=True)


MAX_SAFETENSORS_HEADER = 1 << 24  # a vtok model's header is a few kB; safetensors itself allows 100 MB


def safetensors_shapes(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype, shape) from a safetensors file's JSON header alone, its data never read: what a
    loader checks against the shapes it expects before it reads (and allocates) a tampered file's
    gigabytes. ValueError when the header is not sane; OSError when the file cannot be read."""
    import json
    import struct

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_SAFETENSORS_HEADER, size - 8):
            raise ValueError(f"header of {n} bytes in a file of {size}")
        header = json.loads(f.read(n))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or not isinstance(info.get("shape"), list):
            raise ValueError(f"tensor {name!r} has no shape")
        shape = info["shape"]
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ValueError(f"tensor {name!r} has shape {shape}")
        out[name] = (str(info.get("dtype")), tuple(shape))
    return out
