"""Unpacking untrusted zips: bombs, floods of entries and escaping paths are refused before anything is written."""

from __future__ import annotations

import io
import zipfile

import pytest

from gnnseg.core.archives import ArchiveLimits, UnsafeArchiveError, safe_extract


def zip_of(entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> zipfile.ZipFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return zipfile.ZipFile(io.BytesIO(buffer.getvalue()))


def test_a_plain_archive_is_unpacked_with_its_folders(tmp_path):
    written = safe_extract(zip_of({"series/a.dcm": b"1" * 10, "series/b.dcm": b"22"}), tmp_path / "out",
                           ArchiveLimits(), "upload.zip")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == ["series/a.dcm", "series/b.dcm"]
    assert (tmp_path / "out" / "series" / "b.dcm").read_bytes() == b"22"


@pytest.mark.parametrize(("entries", "limits", "message"), [
    ({"bomb.bin": bytes(8 << 20)}, ArchiveLimits(), "expands"),                    # 8 MiB of zeros: ~8000-fold
    ({"a": b"x" * 600, "b": b"y" * 600}, ArchiveLimits(max_bytes=1000), "would unpack to 1,200 bytes"),
    ({f"f{k}": b"" for k in range(12)}, ArchiveLimits(max_entries=10), "12 entries"),
    ({"../escape.txt": b"x"}, ArchiveLimits(), "unsafe path"),
    ({"/etc/passwd": b"x"}, ArchiveLimits(), "unsafe path"),
])
def test_hostile_archives_are_refused_before_writing(tmp_path, entries, limits, message):
    with pytest.raises(UnsafeArchiveError, match=message):
        safe_extract(zip_of(entries), tmp_path / "out", limits, "upload.zip")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))
    assert not (tmp_path / "escape.txt").exists()


def test_an_entry_that_expands_past_its_declared_size_is_stopped_and_removed(tmp_path):
    archive = zip_of({"a.bin": b"ok", "b.bin": b"z" * 5000}, compression=zipfile.ZIP_STORED)
    archive.getinfo("b.bin").file_size = 100                                        # the directory lies
    with pytest.raises(UnsafeArchiveError, match="b.bin.* (is corrupt|expands past)"):
        safe_extract(archive, tmp_path / "out", ArchiveLimits(), "upload.zip")
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))
