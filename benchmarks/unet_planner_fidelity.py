"""Our fingerprint and plans beside nnU-Net v2's own planner, on the same raw datasets and the same budget.

nnU-Net (``nnunetv2``) is not a dependency: install it in a separate environment that keeps torch 2.13.0
(``python -m venv NN && NN/bin/pip install torch==2.13.0 torchvision==0.28.0 nnunetv2``) and pass
``--nnunet-python NN/bin/python``. Every planner preset is compared with its nnU-Net class: ``default`` with
``ExperimentPlanner``, ``resenc_m`` / ``resenc_l`` / ``resenc_xl`` with ``nnUNetPlannerResEncM`` / ``L`` / ``XL``, each
at that class's own budget (8, 8, 24, 40 GB GPU); we plan with ``device="gpu", base_features=32`` and the preset's
default ``memory_gb``. Compared per configuration: target spacing, patch size, batch size, strides (pooling per
axis), kernel sizes, features per stage, normalisation, for the ResEnc presets also the network class, blocks per
encoder stage and decoder convs per stage, and the foreground intensity statistics of the fingerprint. Writes
benchmarks/results/unet_planner_fidelity.json (``--planners`` / ``--datasets`` pick a subset).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from gnnseg.core import machine_info, write_json
from gnnseg.seg.io import (
    MedicalImage,
    RawDataset,
    convert_drive,
    convert_isbi2012,
    convert_kvasir,
    read_nifti,
    write_raw_dataset,
)
from gnnseg.seg.unet.fingerprint import extract_fingerprint
from gnnseg.seg.unet.planner import plan_experiment
from gnnseg.seg.unet.planner_presets import PRESETS
from gnnseg.seg.unet.plans import Plans

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unet_totalseg_ct import ORGANS, remap  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SCHEMES = {"ZScoreNormalization": "zscore", "CTNormalization": "ct"}
NNUNET_PLANNERS = {"default": "ExperimentPlanner", "resenc_m": "nnUNetPlannerResEncM",
                   "resenc_l": "nnUNetPlannerResEncL", "resenc_xl": "nnUNetPlannerResEncXL"}
PLAIN_CONV_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"


def build_ct(source: Path, target: Path) -> RawDataset:
    ct, labels = read_nifti(source / "example_ct_sm.nii.gz"), read_nifti(source / "example_seg.nii.gz")
    return write_raw_dataset(target, channel_names=["CT"], file_ending=".nii.gz",
                             labels={"background": 0, **{n: k for k, n in enumerate(ORGANS, 1)}},
                             training=[("ct_sm", [ct], MedicalImage(remap(labels.array), labels.spacing,
                                                                    labels.affine))])


def nnunet_plans(python: str, dataset: RawDataset, number: int, scratch: Path,
                 presets: list[str]) -> tuple[dict[str, dict], dict]:
    """nnU-Net's fingerprint and, per preset, the plans its planner class writes at the class's own budget."""
    name = f"Dataset{number:03d}_{dataset.name.replace('-', '_')}"
    raw = scratch / "raw" / name
    shutil.copytree(dataset.root, raw)
    env = {**os.environ, "nnUNet_raw": str(scratch / "raw"), "nnUNet_preprocessed": str(scratch / "pre"),
           "nnUNet_results": str(scratch / "res"), "OMP_NUM_THREADS": "1"}
    bin_dir = Path(python).parent
    commands = [["nnUNetv2_extract_fingerprint", "-d", str(number), "-np", "1"]]
    commands += [["nnUNetv2_plan_experiment", "-d", str(number), "-pl", NNUNET_PLANNERS[preset]] for preset in presets]
    for command in commands:
        subprocess.run([str(bin_dir / command[0]), *command[1:]], env=env, check=True, capture_output=True)
    folder = scratch / "pre" / name
    return ({preset: json.loads((folder / f"{PRESETS[preset].plans_name}.json").read_text()) for preset in presets},
            json.loads((folder / "dataset_fingerprint.json").read_text()))


def compare(ours: Plans, fingerprint, theirs: dict, their_fingerprint: dict) -> dict:
    rows = {}
    for name, config in theirs["configurations"].items():
        if "architecture" not in config:
            continue                                     # cascade entries only point at other configurations
        mine = ours.configurations.get(name)
        arch = config["architecture"]["arch_kwargs"]
        theirs_row = {"spacing": [round(float(s), 4) for s in config["spacing"]],
                      "patch_size": [int(p) for p in config["patch_size"]], "batch_size": int(config["batch_size"]),
                      "strides": [list(s) for s in arch["strides"]],
                      "kernel_sizes": [list(k) for k in arch["kernel_sizes"]],
                      "features_per_stage": list(arch["features_per_stage"]),
                      "normalization": [SCHEMES.get(s, s) for s in config["normalization_schemes"]],
                      "use_mask_for_norm": list(config["use_mask_for_norm"]),
                      "network_class_name": config["architecture"]["network_class_name"]}
        if "n_blocks_per_stage" in arch:                 # the ResEnc presets' network
            theirs_row.update(n_blocks_per_stage=list(arch["n_blocks_per_stage"]),
                              n_conv_per_stage_decoder=list(arch["n_conv_per_stage_decoder"]))
        if mine is None:
            rows[name] = {"nnunet": theirs_row, "ours": None, "equal": False}
            continue
        ours_row = {"spacing": [round(float(s), 4) for s in mine.spacing], "patch_size": list(mine.patch_size),
                    "batch_size": mine.batch_size, "strides": [list(s) for s in mine.network.strides],
                    "kernel_sizes": [list(k) for k in mine.network.kernel_sizes],
                    "features_per_stage": list(mine.network.features_per_stage),
                    "normalization": list(ours.normalization_schemes),
                    "use_mask_for_norm": list(ours.use_mask_for_norm),
                    "network_class_name": (mine.architecture or {}).get("network_class_name", PLAIN_CONV_UNET)}
        if mine.architecture is not None:
            ours_row.update(n_blocks_per_stage=list(mine.architecture["arch_kwargs"]["n_blocks_per_stage"]),
                            n_conv_per_stage_decoder=list(mine.architecture["arch_kwargs"]["n_conv_per_stage_decoder"]))
        differences = {key: {"ours": ours_row.get(key), "nnunet": theirs_row[key]}
                       for key in theirs_row if ours_row.get(key) != theirs_row[key]}
        rows[name] = {"ours": ours_row, "nnunet": theirs_row, "differences": differences, "equal": not differences}
    stats = {}
    for channel, mine in fingerprint.foreground_intensity_properties_per_channel.items():
        other = their_fingerprint["foreground_intensity_properties_per_channel"][channel]
        stats[channel] = {key: {"ours": round(mine[key], 3), "nnunet": round(float(other[key]), 3)}
                          for key in ("mean", "std", "percentile_00_5", "percentile_99_5")}
    return {"configurations": rows, "intensity_statistics": stats,
            "median_relative_size_after_cropping": {"ours": fingerprint.median_relative_size_after_cropping,
                                                    "nnunet": their_fingerprint["median_relative_size_after_cropping"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nnunet-python", required=True, help="python of an environment with nnunetv2")
    parser.add_argument("--data", default="../shared/datasets")
    parser.add_argument("--planners", nargs="+", choices=list(NNUNET_PLANNERS), default=list(NNUNET_PLANNERS))
    parser.add_argument("--datasets", nargs="+", help="a subset of the datasets, by name (default: all)")
    parser.add_argument("--output", default=str(RESULTS / "unet_planner_fidelity.json"))
    args = parser.parse_args()
    data = Path(args.data)
    scratch = Path(tempfile.mkdtemp(prefix="fidelity_"))
    builders = [("ISBI2012_EM", lambda t: convert_isbi2012(data / "isbi2012_em", t)),
                ("DRIVE", lambda t: convert_drive(data / "drive", t)),
                ("Kvasir_SEG_subset", lambda t: convert_kvasir(data / "kvasir_seg_subset", t)),
                ("TotalSegmentator_CT", lambda t: build_ct(data / "totalsegmentator_examples", t))]
    unknown = sorted(set(args.datasets or ()) - {name for name, _ in builders})
    if unknown:
        parser.error(f"unknown datasets {unknown}; choose from {[name for name, _ in builders]}")
    report = {"benchmark": "unet_planner_fidelity", "machine": machine_info(),
              "budgets": {preset: f"{PRESETS[preset].reference_gb:g} GB GPU ({NNUNET_PLANNERS[preset]})"
                          for preset in args.planners}, "datasets": {}}
    for number, (name, build) in enumerate(builders, start=1):
        if args.datasets and name not in args.datasets:
            continue
        dataset = build(scratch / "ours" / name)
        fingerprint = extract_fingerprint(dataset)
        theirs, their_fingerprint = nnunet_plans(args.nnunet_python, dataset, number, scratch / "nnunet",
                                                 args.planners)
        report["datasets"][name] = {}
        for preset in args.planners:
            ours = plan_experiment(fingerprint, device="gpu", base_features=32, planner=preset)
            report["datasets"][name][preset] = compare(ours, fingerprint, theirs[preset], their_fingerprint)
            for config, row in report["datasets"][name][preset]["configurations"].items():
                print(f"{name:20s} {preset:9s} {config:10s} equal={row['equal']}  differences: "
                      f"{sorted(row.get('differences', {})) if row['ours'] else 'configuration not planned by us'}",
                      flush=True)
    report["all_equal"] = bool(np.all([row["equal"] for d in report["datasets"].values() for p in d.values()
                                       for row in p["configurations"].values()]))
    write_json(args.output, report)


if __name__ == "__main__":
    main()
