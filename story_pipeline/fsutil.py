"""Atomic file writes: write to a temporary name beside the target, then rename into place.

A crash (or SIGKILL) mid-write leaves the previous file untouched and never a half-written one.
The temporary name carries the writer's process id (``.<stem>.<pid>.<random><suffix>``): the next
write of the same target removes temp files whose writer is no longer running, so crashes leave
nothing behind once the work is redone.
"""

import contextlib
import glob
import hashlib
import os
import tempfile
from pathlib import Path

from story_pipeline.errors import WriteError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove_stale_temps(folder: Path, prefix: str, suffix: str) -> None:
    """Temp files ``<prefix><pid>.<8 random chars><suffix>`` of writers that died (on this machine)."""
    for p in folder.glob(glob.escape(prefix) + "*" + glob.escape(suffix)):
        pid, _, rand = p.name[len(prefix):len(p.name) - len(suffix)].partition(".")
        if pid.isdigit() and len(rand) == 8 and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                p.unlink()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path in the target's folder; rename it onto ``target`` on success.

    ``suffix`` defaults to the target's suffix so writers that infer the format from the
    extension (ffmpeg, PIL, pyarrow) keep working. Temp files of this target left by a writer
    that was killed are removed first.
    """
    target = Path(target)
    suffix = suffix if suffix is not None else target.suffix
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(target.parent, f".{target.stem}.", suffix)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.{os.getpid()}.", suffix=suffix, dir=target.parent)
    except OSError as e:  # a user's output path: its folder is a file, is not writable, ...
        blocker = next((p for p in (target.parent, *target.parent.parents) if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker else (e.strerror or str(e))
        raise WriteError(f"Cannot write {target} ({why}); choose another path.") from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():  # mkstemp makes 0600 files; give the result the usual umask mode
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        try:
            os.replace(tmp, target)
        except IsADirectoryError:
            raise WriteError(f"Cannot write {target}: it is a folder; choose a file path.") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(target, text.encode("utf-8"))


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def content_digest(files, extra: str = "") -> str:
    """16 hex digits of sha256 over ``extra`` and every (role, file): the role (a file name, or a
    path such as "unet/config.json") and the sha256 of the file's bytes, streamed. ``files`` holds
    paths (the role is the file name) or (role, path) pairs, in a fixed order.

    A content hash, not a stat (size/mtime) one: model ids key the memos downstream, and weights
    replaced in place or copied with their mtimes would otherwise reuse stale results. Where the
    files live does not change it."""
    h = hashlib.sha256(extra.encode())
    for item in files:
        role, path = (Path(item).name, item) if isinstance(item, (str, os.PathLike)) else item
        h.update(role.encode())
        h.update(bytes.fromhex(_cached_sha256(path)))
    return h.hexdigest()[:16]


_SHA_CACHE: dict[tuple, str] = {}


def _cached_sha256(path) -> str:
    """``file_sha256`` read once per process for the same file (path, size, mtime): a model's
    identity is asked for on every render and sensor tick; its gigabytes are hashed once."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = file_sha256(path, chunk=1 << 24)
    return _SHA_CACHE[key]
