"""onnxruntime CPU sessions whose optimised graphs are kept on disk, one per graph file and machine.

Opening a session optimises its graph first: node fusions and, on x86, the NCHWc layout of 2D convolutions, which
reorders every convolution's weights. For a 2D nnU-Net of 185 MB that takes about 0.4 s per graph, as long as one of
its windows' forwards. onnxruntime can write the optimised graph and open it again without optimising, but the NCHWc
form only runs on the kind of CPU it was made on. So the optimised graph is written once into a cache and reused only
where everything it depends on is the same: the graph file (path, size, modification and change times, inode), the
onnxruntime version and the CPU (model name and instruction-set flags). A stale or unreadable cache entry is never an
error: the graph is then optimised as usual and the entry written again. One entry is kept per graph file: writing a
new one removes the entries of the file's earlier versions. Each entry has a ``.source`` note beside it naming its
graph file, touched whenever the entry is used (an entry made before entries had notes gets one when next used);
writing an entry also removes those whose graph file no longer exists and that have not been used for a week, so the
optimised graphs of deleted or moved exports do not stay, while a cache shared by machines or containers that see
different files keeps what any of them still uses.

The cache lives in ``$GNNSEG_CACHE_DIR/onnxruntime`` (default ``$XDG_CACHE_HOME/gnnseg``, else ``~/.cache/gnnseg``);
each entry is about the size of its graph. ``GNNSEG_ONNX_CACHE=0`` turns it off; an unwritable cache folder is
skipped silently (the graph is optimised in memory, as without a cache).
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path

from gnnseg.core.cpu_info import cpu_model_and_flags

CACHE_ENV = "GNNSEG_CACHE_DIR"
SWITCH_ENV = "GNNSEG_ONNX_CACHE"
_PROVIDERS = ["CPUExecutionProvider"]
_ERRORS_ONLY = 3   # onnxruntime's log severity: saving an NCHWc graph warns that it is hardware-specific
_UNUSED_FOR_S = 7 * 24 * 3600   # how long an entry whose graph file is gone must have gone unused to be removed


def cache_folder() -> Path | None:
    """Where optimised graphs are kept, or None when the cache is turned off."""
    if os.environ.get(SWITCH_ENV, "1").strip().lower() in {"0", "off", "false", "no"}:
        return None
    root = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gnnseg"
    return Path(root) / "onnxruntime"


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _entry_prefix(path: Path) -> str:
    """The start of every entry's name for the graph at ``path``: one entry per graph file is kept."""
    return f"{path.stem}-{_digest(str(path.resolve()), 12)}-"


def _entry(path: Path, folder: Path, onnxruntime) -> Path:
    """The entry for the graph as it is now: a rewritten file (new size, modification or change time, or inode: a
    copy that kept the old modification time still changes the change time) gets another name."""
    stat = path.stat()
    key = (f"{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}|{stat.st_ino}|{onnxruntime.__version__}|"
           f"{'|'.join(cpu_model_and_flags())}")
    return folder / f"{_entry_prefix(path)}{_digest(key, 24)}.onnx"


def _source_note(entry: Path) -> Path:
    """The note beside an entry that names the graph file it was made from; its modification time is the entry's
    last use."""
    return entry.with_suffix(".source")


def _write_note(entry: Path, source: Path) -> None:
    """The note naming ``source`` beside ``entry``, written whole or not at all (another process never reads half a
    note)."""
    note = _source_note(entry)
    partial = note.with_name(f".{note.name}.{uuid.uuid4().hex}.tmp")
    try:
        partial.write_bytes(os.fsencode(source))
        os.replace(partial, note)
    finally:
        partial.unlink(missing_ok=True)


def _note_use(entry: Path, source: Path) -> None:
    """Mark ``entry`` used now (its note's modification time); an entry made before entries had notes gets one. A
    read-only cache is left as it is."""
    note = _source_note(entry)
    try:
        if note.exists():
            os.utime(note)
        else:
            _write_note(entry, source.resolve())
    except OSError:
        pass


def _remove(entry: Path) -> None:
    """Remove an entry and its note, as far as the folder allows."""
    for path in (entry, _source_note(entry)):
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def _remove_orphans(folder: Path) -> None:
    """Remove the entries whose graph file no longer exists and that have not been used for :data:`_UNUSED_FOR_S`,
    as their notes tell. Entries without a note, and notes that cannot be read or checked, are left alone."""
    now = time.time()
    for note in folder.glob("*.source"):
        try:
            if now - note.stat().st_mtime < _UNUSED_FOR_S:
                continue
            source = Path(os.fsdecode(note.read_bytes()))
            if source.is_absolute() and not source.exists():
                _remove(note.with_suffix(".onnx"))
        except OSError:   # unreadable, or a folder on the way that cannot be searched: perhaps still there
            continue


def _check_name(path: Path) -> None:
    """onnxruntime takes file names as UTF-8 text only; a name that is not (Linux allows any bytes) is refused here,
    by name."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{path!r} cannot be opened by onnxruntime, which takes only file names that are valid "
                         "UTF-8; rename the file") from None


def default_threads() -> int:
    """Physical cores where the platform says, else all logical ones: onnxruntime gains nothing from SMT siblings."""
    logical = os.cpu_count() or 1
    try:
        siblings = Path("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list").read_text()
        per_core = len(siblings.replace("-", ",").split(",")) if siblings.strip() else 1
        return max(1, logical // max(per_core, 1))
    except OSError:
        return logical


def _options(onnxruntime, threads: int, spinning: bool):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def open_session(path: str | os.PathLike, *, threads: int = 0, spinning: bool = True):
    """An onnxruntime session for the graph at ``path`` on the CPU (``threads`` intra-op threads, 0: onnxruntime's
    choice; ``spinning=False`` lets idle threads sleep, for sessions that take turns or run side by side), opened
    from the cached optimised graph where there is one. A graph onnxruntime cannot open is a ``ValueError`` naming
    ``path``."""
    import onnxruntime

    path = Path(path)
    _check_name(path)
    folder = cache_folder()
    if folder is None or not path.is_file():
        return open_session_uncached(path, threads=threads, spinning=spinning)
    entry = _entry(path, folder, onnxruntime)
    if entry.is_file():
        options = _options(onnxruntime, threads, spinning)
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            session = onnxruntime.InferenceSession(str(entry), options, providers=_PROVIDERS)
        except Exception:  # a damaged or foreign entry: optimise again and replace it
            _remove(entry)
        else:
            _note_use(entry, path)
            return session
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return open_session_uncached(path, threads=threads, spinning=spinning)
    if not os.access(folder, os.W_OK | os.X_OK):   # a read-only cache: optimising twice per open would cost more
        return open_session_uncached(path, threads=threads, spinning=spinning)
    written = folder / f".{entry.name}.{uuid.uuid4().hex}.tmp"
    options = _options(onnxruntime, threads, spinning)
    options.optimized_model_filepath = str(written)
    options.log_severity_level = _ERRORS_ONLY
    try:
        try:
            session = onnxruntime.InferenceSession(str(path), options, providers=_PROVIDERS)
        except Exception:  # perhaps only the optimised graph could not be written: the plain open says what is wrong
            return open_session_uncached(path, threads=threads, spinning=spinning)
        for stale in folder.glob(f"{_entry_prefix(path)}*.onnx"):   # earlier versions of this graph file
            _remove(stale)
        _write_note(entry, path.resolve())   # before the entry: a note without its entry is harmless
        os.replace(written, entry)
    except OSError:
        pass   # the session is open; only the cache entry is missing
    finally:
        written.unlink(missing_ok=True)   # also on Ctrl+C: no graph-sized leftovers
    try:
        _remove_orphans(folder)
    except OSError:
        pass
    return session


def open_session_uncached(path: str | os.PathLike, *, threads: int = 0, spinning: bool = True):
    """:func:`open_session` without the cache: the graph is optimised in memory only."""
    import onnxruntime

    _check_name(Path(path))
    try:
        return onnxruntime.InferenceSession(str(path), _options(onnxruntime, threads, spinning),
                                            providers=_PROVIDERS)
    except Exception as exc:  # onnxruntime raises its own classes for unreadable or invalid graphs
        raise ValueError(f"{path} cannot be opened by onnxruntime: {exc}") from exc
