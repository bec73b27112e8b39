"""Zip archives from elsewhere (an upload, a download), unpacked without trusting what they declare.

A zip of a few megabytes can expand to gigabytes (a "zip bomb"), hold tens of thousands of entries, or name paths
outside the folder it is unpacked into. :func:`safe_extract` refuses all three from the archive's directory
before writing anything, then writes each entry while counting its bytes, so an entry that expands past what it
declared is stopped too. :func:`read_entries` does the same into memory, for a caller that reads the files from
there (an uploaded DICOM series) and should not touch the disk.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO


class UnsafeArchiveError(ValueError):
    """An archive refused before (or while) unpacking: too large, too many entries, too compressed, or unsafe."""


@dataclass(frozen=True)
class ArchiveLimits:
    max_bytes: int = 1 << 30
    """Total uncompressed bytes of all entries."""
    max_entries: int = 10_000
    max_ratio: float = 200.0
    """Largest uncompressed / compressed ratio of an entry over 1 MiB (DICOM and text compress 2-20x; bombs
    1000x and more)."""


RATIO_CHECKED_FROM = 1 << 20


def checked_entries(archive: zipfile.ZipFile, limits: ArchiveLimits, name: str) -> list[zipfile.ZipInfo]:
    """The file entries of ``archive`` (called ``name`` in messages) once its directory passes ``limits``."""
    entries = [entry for entry in archive.infolist() if not entry.is_dir()]
    if len(entries) > limits.max_entries:
        raise UnsafeArchiveError(f"{name} holds {len(entries):,} entries, over the limit of {limits.max_entries:,}")
    total = sum(entry.file_size for entry in entries)
    if total > limits.max_bytes:
        raise UnsafeArchiveError(f"{name} would unpack to {total:,} bytes, over the limit of {limits.max_bytes:,}")
    for entry in entries:
        _check_entry(entry, limits, name)
    return entries


def read_entries(archive: zipfile.ZipFile, limits: ArchiveLimits, name: str) -> dict[str, bytes]:
    """Every file of ``archive`` in memory, by its path inside the archive, within ``limits`` (nothing on disk)."""
    contents = {}
    for entry in checked_entries(archive, limits, name):
        buffer = io.BytesIO()
        _copy_counted(archive, entry, buffer, name)
        contents[entry.filename] = buffer.getvalue()
    return contents


def safe_extract(archive: zipfile.ZipFile, target: str | Path, limits: ArchiveLimits, name: str) -> list[Path]:
    """Unpack ``archive`` (called ``name`` in messages) into the folder ``target``; returns the files written.

    Raises :class:`UnsafeArchiveError` naming the problem; on any error the files written so far are removed.
    """
    target = Path(target)
    entries = checked_entries(archive, limits, name)
    written: list[Path] = []
    target.mkdir(parents=True, exist_ok=True)
    try:
        for entry in entries:
            path = target.joinpath(*PurePosixPath(entry.filename).parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            written.append(path)
            with path.open("wb") as out:
                _copy_counted(archive, entry, out, name)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def _check_entry(entry: zipfile.ZipInfo, limits: ArchiveLimits, name: str) -> None:
    parts = PurePosixPath(entry.filename.replace("\\", "/")).parts
    if entry.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise UnsafeArchiveError(f"{name} holds an unsafe path {entry.filename!r} (absolute or leaving its folder)")
    if (entry.external_attr >> 16) & 0o170000 == 0o120000:
        raise UnsafeArchiveError(f"{name} holds a symbolic link {entry.filename!r}")
    ratio = entry.file_size / max(entry.compress_size, 1)
    if entry.file_size > RATIO_CHECKED_FROM and ratio > limits.max_ratio:
        raise UnsafeArchiveError(f"{name}: {entry.filename!r} expands {ratio:,.0f}-fold ({entry.compress_size:,} -> "
                                 f"{entry.file_size:,} bytes), over the limit of {limits.max_ratio:,.0f}")


def _copy_counted(archive: zipfile.ZipFile, entry: zipfile.ZipInfo, out: BinaryIO, name: str) -> None:
    remaining = entry.file_size
    try:
        with archive.open(entry) as source:
            while chunk := source.read(1 << 20):
                remaining -= len(chunk)
                if remaining < 0:
                    raise UnsafeArchiveError(f"{name}: {entry.filename!r} expands past the {entry.file_size:,} "
                                             "bytes it declares")
                out.write(chunk)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:  # zipfile's own checks of size and CRC
        raise UnsafeArchiveError(f"{name}: {entry.filename!r} is corrupt ({exc})") from None

