"""Files that declare more than they hold: a decompression bomb's header without the bomb. The hardening tests send
them to the service, and ``benchmarks/hardening_probe.py`` replays them against a running server."""

from __future__ import annotations

import gzip
import io
import os
import struct
import zipfile
import zlib

import nibabel as nib
import numpy as np


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header declaring ``width x height`` grey pixels, with a few bytes of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def nifti_declaring(shape: tuple[int, ...], payload: int = 4096) -> bytes:
    """A gzipped NIfTI whose header declares ``shape`` int16 voxels, followed by ``payload`` random bytes."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 352
    return gzip.compress(header.binaryblock + b"\0" * 4 + os.urandom(payload))


def npz_declaring(shape: tuple[int, ...]) -> bytes:
    """A challenge npz whose ``imgs`` header declares ``shape`` uint8 values but holds a few bytes."""
    npy_header = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy_header, {"descr": "|u1", "fortran_order": False, "shape": shape})
    boxes = io.BytesIO()
    np.save(boxes, np.array([[0, 0, 4, 4]]))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("imgs.npy", npy_header.getvalue() + b"\0" * 16)
        archive.writestr("boxes.npy", boxes.getvalue())
    return buffer.getvalue()
