"""Freed memory stays in the process: a large array allocated again after one was freed faults in no fresh pages."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the setting is glibc's")

SCRIPT = """
import json, resource
import numpy as np
from gnnseg.core.freed_memory import keep_freed_memory

def faults_of_a_second_array():
    first = np.ones(1 << 24, dtype=np.float32)    # 64 MB, above any mmap threshold of glibc
    del first
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    second = np.ones(1 << 24, dtype=np.float32)
    del second
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

plain = faults_of_a_second_array()
applied = keep_freed_memory()
faults_of_a_second_array()                        # the heap grows once
print(json.dumps({"plain": plain, "applied": applied, "again": keep_freed_memory(),
                  "kept": faults_of_a_second_array()}))
"""


def test_a_freed_large_array_is_reused_without_page_faults():
    # a process of its own: the setting lasts as long as the process, and this one may already have it
    result = json.loads(subprocess.run([sys.executable, "-c", SCRIPT], check=True, capture_output=True,
                                       text=True).stdout)
    assert result["applied"] is True and result["again"] is True
    assert result["plain"] > 0                        # glibc's default: fresh pages every time
    assert result["kept"] <= result["plain"] // 10    # kept: the same pages again
