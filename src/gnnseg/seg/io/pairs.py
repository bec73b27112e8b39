"""Images paired with their masks by full name: ``case.1.jpg`` with ``case.1.png``, never with ``case.2.png``.

A file's stem is its name without its image extension (the longest that fits, so ``.nii.gz`` goes whole); case is
ignored. An image without a mask is an error that lists every such name, unless the caller allows it: a folder
that silently lost half its cases would score the rest and say nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def file_stem(name: str, suffixes: Sequence[str]) -> str | None:
    """``name`` (lower case) without the longest of ``suffixes`` it ends with; ``None`` when it ends with none."""
    lowered = name.lower()
    matching = [suffix for suffix in suffixes if lowered.endswith(suffix)]
    return lowered[: -len(max(matching, key=len))] if matching else None


def paired_files(images: Path, masks: Path, suffixes: Sequence[str], *,
                 allow_unmatched: bool = False) -> list[tuple[Path, Path]]:
    """``(image, mask)`` pairs of the two folders' files with the same stem, in image name order."""
    for folder, role in ((images, "images"), (masks, "masks")):
        if not folder.is_dir():
            raise FileNotFoundError(f"the {role} folder {folder} is not a folder" if folder.exists()
                                    else f"the {role} folder {folder} does not exist")
    by_stem = _by_stem(masks, suffixes)
    pairs, unmatched = [], []
    for stem, image in sorted(_by_stem(images, suffixes).items(), key=lambda item: item[1].name):
        if stem in by_stem:
            pairs.append((image, by_stem[stem]))
        else:
            unmatched.append(image.name)
    if unmatched and not allow_unmatched:
        raise FileNotFoundError(f"{len(unmatched)} image(s) in {images} have no mask of the same name in {masks}: "
                                f"{', '.join(unmatched)} (pass --allow-unmatched to go on without them)")
    if not pairs:
        raise FileNotFoundError(f"no image in {images} has a mask of the same name in {masks}")
    return pairs


def _by_stem(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in folder.iterdir():
        stem = file_stem(path.name, suffixes) if path.is_file() else None
        if stem is None:
            continue
        if stem in found:
            raise ValueError(f"{folder} holds two files named {stem!r}: {found[stem].name} and {path.name}; "
                             "keep one")
        found[stem] = path
    return found
