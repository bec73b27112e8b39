"""Progress bars for long work (tqdm), quiet when output is not a terminal or when asked."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, enabled: bool | None = None,
             leave: bool = False) -> Iterator[T]:
    """Wrap ``iterable`` in a progress bar on stderr.

    ``enabled=None`` shows the bar only when stderr is a terminal, so logs and CI stay clean.
    """
    from tqdm.auto import tqdm  # imported here: 60 ms that a command which shows no bar should not pay

    if enabled is None:
        enabled = sys.stderr.isatty()
    return iter(tqdm(iterable, desc=desc, total=total, disable=not enabled, leave=leave, file=sys.stderr,
                     dynamic_ncols=True))
