"""nnU-Net v2's dataset IDs and its three folders, named by environment variables, for ``gnnseg seg ... -d``.

An nnU-Net user keeps raw datasets in ``$nnUNet_raw/DatasetXXX_Name/``, preprocessed data in
``$nnUNet_preprocessed/DatasetXXX_Name/`` and trained models in ``$nnUNet_results/DatasetXXX_Name/``, and names a
dataset by its full name or by its ID. An ID is resolved as nnU-Net's ``maybe_convert_to_dataset_name`` does: padded
to three digits, it is matched as ``DatasetXXX_*`` across those of the three folders that are set, and must name
exactly one dataset. A full name (``Dataset501_Liver``) is taken as it is.

The variables are read here only, when a command is given ``-d``; everywhere else gnnseg takes folders as arguments
(the pipeline itself never reads the environment). Every failure is one error naming the variable or the folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

RAW = "nnUNet_raw"
PREPROCESSED = "nnUNet_preprocessed"
RESULTS = "nnUNet_results"
VARIABLES = (RAW, PREPROCESSED, RESULTS)

_ID = re.compile(r"\d+")


def base_folder(variable: str, environment: Mapping[str, str] | None = None) -> Path:
    """The folder the environment ``variable`` names; refused when it is unset or names no folder."""
    environment = os.environ if environment is None else environment
    value = environment.get(variable)
    if not value:
        raise ValueError(f"the environment variable {variable} is not set (nnU-Net's folders: export {RAW}, "
                         f"{PREPROCESSED} and {RESULTS})")
    folder = Path(value)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: the folder {variable} names does not exist")
    return folder


def dataset_name(reference: str | int, environment: Mapping[str, str] | None = None) -> str:
    """``Dataset501_Liver`` for ``501``, ``"501"``, ``"Dataset501_Liver"``: a full name as it is, an ID matched as
    ``Dataset501_*`` in the folders of nnUNet_raw, nnUNet_preprocessed and nnUNet_results (those set)."""
    text = str(reference).strip()
    if text.startswith("Dataset"):
        return text
    if not _ID.fullmatch(text):
        raise ValueError(f"-d {text!r}: give a dataset ID (e.g. 501) or a name like Dataset501_Liver")
    environment = os.environ if environment is None else environment
    searched = [Path(environment[variable]) for variable in VARIABLES if environment.get(variable)]
    if not searched:
        raise ValueError(f"dataset ID {text}: none of {', '.join(VARIABLES)} is set, so there is nowhere to look "
                         "for it")
    prefix = f"Dataset{int(text):03d}_"
    names = sorted({child.name for folder in searched if folder.is_dir() for child in folder.iterdir()
                    if child.is_dir() and child.name.startswith(prefix)})
    where = ", ".join(str(folder) for folder in searched)
    if not names:
        raise FileNotFoundError(f"dataset ID {text}: no {prefix}* folder in {where}")
    if len(names) > 1:
        raise ValueError(f"dataset ID {text} is ambiguous: {', '.join(names)} (in {where}); give the full name")
    return names[0]


def dataset_folder(reference: str | int, variable: str, *, must_exist: bool = True,
                   environment: Mapping[str, str] | None = None) -> Path:
    """``$variable/DatasetXXX_Name`` for the dataset ``reference``; with ``must_exist``, refused when it is missing."""
    folder = base_folder(variable, environment) / dataset_name(reference, environment)
    if must_exist and not folder.is_dir():
        raise FileNotFoundError(f"{folder}: dataset folder missing in {variable}")
    return folder
