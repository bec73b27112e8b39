"""The cases of an input folder (``CASE_XXXX<ending>`` files grouped by case, in channel order: nnU-Net naming) and
the files a prediction writes for them.

Torch-free, for the ONNX predictor; the rules are the PyTorch pipelines' (:mod:`gnnseg.seg.unet.pipeline` for
gnnseg's models, :mod:`gnnseg.seg.unet.nnunet_predict` for nnU-Net's).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from gnnseg.seg.io import ImageFormatError


def inputs_by_case(input_dir: Path, file_ending: str, channels: int | None) -> dict[str, list[Path]]:
    """Case id -> its channel files in channel order. With ``channels`` (gnnseg's rule), a folder of single-channel
    files named freely is also accepted (each file a case) and cases without exactly ``channels`` files are refused,
    all named at once; without it (nnU-Net's rule, where one colour image holds several channels), every file must
    be named ``<case>_<XXXX><ending>`` and the channels are counted once read."""
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input folder not found: {input_dir}")
    files = sorted(p for p in input_dir.iterdir() if p.is_file() and p.name.endswith(file_ending))
    cases: dict[str, list[Path]] = {}
    for path in files:
        stem = path.name[: -len(file_ending)]
        case_id, _, channel = stem.rpartition("_")
        if case_id and channel.isdigit() and len(channel) == 4:
            cases.setdefault(case_id, []).append(path)
        elif channels == 1:
            cases[stem] = [path]
        elif channels is None:
            raise ImageFormatError(f"{path}: not named <case>_<XXXX>{file_ending} as the model's inputs must be")
    incomplete = {c: len(p) for c, p in cases.items() if channels is not None and len(p) != channels}
    if incomplete:
        raise ImageFormatError(f"cases {incomplete} do not have the {channels} channel files the model needs")
    return cases


def fresh_outputs(output_dir: Path, case_ids: Iterable[str], file_ending: str, *, with_probabilities: bool = False,
                  folder_files: Sequence[str] = ()) -> dict[str, list[Path]]:
    """Case id -> the files a prediction writes for it in ``output_dir``: its label map, and ``with_probabilities``
    its ``.npz`` and ``.json``. Checked before anything is written: where any of them, or of ``folder_files`` (written
    once per folder), exists already, a ``FileExistsError`` names how many and the first."""
    extra = [".npz", ".json"] if with_probabilities else []
    outputs = {case_id: [output_dir / f"{case_id}{ending}" for ending in (file_ending, *extra)] for case_id in case_ids}
    existing = [path for paths in outputs.values() for path in paths if path.exists()]
    existing += [output_dir / name for name in folder_files if (output_dir / name).exists()]
    if existing:
        raise FileExistsError(f"{len(existing)} outputs already exist in {output_dir} (e.g. {existing[0]}); choose a "
                              "new output folder")
    return outputs
