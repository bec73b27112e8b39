"""Model selection after cross-validation (``find_best_configuration``): the scores, the best configuration or
ensemble and the post-processing decision against ``nnunetv2``'s own functions on the same synthetic predictions;
bad input; and the chain from trained folds (`seg train` keeps its validation predictions) through
`seg find-best-configuration` to `seg predict --postprocessing`.

nnunetv2 is a test oracle only; its tests skip when it is not installed.
"""

from __future__ import annotations

import json
import multiprocessing
import pickle
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from gnnseg.cli import main
from gnnseg.seg.io import MedicalImage, read_any, read_image_2d
from gnnseg.seg.io.any_format import write_any
from gnnseg.seg.unet.crossval_scores import LabelScheme, score_predictions
from gnnseg.seg.unet.model_selection import (
    CrossValidationPredictions,
    determine_postprocessing,
    select_configuration,
)
from gnnseg.seg.unet.postprocess import PostprocessingRule, keep_largest_foreground_component

DATASET = "Dataset042_Synthetic"
TRAINER_PLANS = "nnUNetTrainer__nnUNetPlans__"
SHAPE = (6, 20, 20)
SPACING = (2.0, 1.0, 1.0)
CASES = [f"case_{k:02d}" for k in range(6)]
FOLDS = {0: CASES[:3], 1: CASES[3:]}

LABELS = {"background": 0, "liver": 1, "spleen": 2, "kidneys": 3, "ignore": 4}
REGIONS = {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3}


# ------------------------------------------------------------------------------------------ synthetic predictions

def reference_case(rng: np.random.Generator, touching: bool) -> np.ndarray:
    """Three structures: 1 a large block, 2 a smaller one (against 1 when ``touching``), 3 two separate blobs
    (keeping only its largest component hurts it); with scattered ignore voxels (4) outside them."""
    labels = np.zeros(SHAPE, np.uint8)
    z, y = rng.integers(0, 2), rng.integers(1, 4)
    labels[z:z + 4, y:y + 8, 2:10] = 1
    x2 = 10 if touching else 11
    labels[z + 1:z + 4, y + 1:y + 5, x2:x2 + 4] = 2
    labels[1:4, 14:17, 3:6] = 3
    labels[1:3, 15:18, 14:17] = 3
    ignore = (rng.random(SHAPE) < 0.03) & (labels == 0)
    labels[ignore] = 4
    return labels


def predicted_case(rng: np.random.Generator, reference: np.ndarray, errors: float) -> np.ndarray:
    """The reference without its ignore voxels, with stray specks of labels 1 and 2 (which keep-largest removes),
    some voxels of each structure lost, and a few labels swapped; ``errors`` scales how much."""
    predicted = np.where(reference == 4, 0, reference).astype(np.uint8)
    for label, count in ((1, 1 + rng.integers(0, 3)), (2, rng.integers(0, 3))):
        for _ in range(int(count * errors) + 1):
            z, y, x = rng.integers(0, SHAPE[0]), rng.integers(15, SHAPE[1]), rng.integers(8, 13)
            predicted[z, y:y + 2, x] = label
    lost = rng.random(SHAPE) < 0.08 * errors
    predicted[lost & (predicted > 0)] = 0
    swapped = rng.random(SHAPE) < 0.02 * errors
    predicted[swapped & (predicted > 0)] = rng.integers(1, 4, int((swapped & (predicted > 0)).sum()))
    return predicted


def probabilities_for(rng: np.random.Generator, predicted: np.ndarray, regions: bool,
                      reference: np.ndarray | None = None) -> np.ndarray:
    """Probabilities whose decision is ``predicted``: a softmax with a margin for each label, or per region a
    sigmoid-like value above 0.5 exactly where the region is predicted. With the ``reference`` they are less sure
    where the prediction is wrong (as a network is), which lets an ensemble correct one member's mistakes."""
    truth = predicted if reference is None else np.where(reference == 4, 0, reference)
    if regions:
        members = [(1, 2, 3), (2, 3), (3,)]
        inside = np.stack([np.isin(predicted, m) for m in members])
        right = inside == np.stack([np.isin(truth, m) for m in members])
        sure = rng.uniform(0.8, 1.0, inside.shape) if reference is not None else rng.uniform(0.55, 1.0, inside.shape)
        unsure = rng.uniform(0.55, 0.75, inside.shape)
        above = np.where(right, sure, unsure)
        return np.where(inside, above, 1.0 - above).astype(np.float32)
    classes = np.arange(4)[:, None, None, None]
    logits = 3.0 * (classes == predicted[None]) + rng.uniform(0, 0.9, (4, *SHAPE))
    if reference is not None:
        logits += 2.0 * (classes == truth[None])
    exp = np.exp(logits - logits.max(0))
    return (exp / exp.sum(0)).astype(np.float32)


def write_label_map(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_any(MedicalImage(array.astype(np.uint8), SPACING, np.diag([*SPACING[::-1], 1.0])), path)


def nnunet_plans(configurations) -> dict:
    architecture = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                    "arch_kwargs": {}, "_kw_requires_import": []}
    return {"dataset_name": DATASET, "plans_name": "nnUNetPlans", "image_reader_writer": "SimpleITKIO",
            "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
            "configurations": {c: {"data_identifier": f"nnUNetPlans_{c}", "architecture": architecture,
                                   "patch_size": [20, 20] if c == "2d" else [6, 20, 20]} for c in configurations}}


def layout(root: Path, labels: dict, errors=(1.0, 2.0), informed: bool = False, configurations=("2d", "3d_fullres"),
           seed: int = 0) -> dict:
    """Cross-validation predictions laid out as nnU-Net keeps them: references in ``nnUNet_raw/<dataset>/labelsTr``
    (and ``gt_segmentations``), each configuration's ``fold_<k>/validation/`` with label maps, ``.npz``
    probabilities and the ``.pkl`` properties its ensembling reads; plans.json and dataset.json beside them."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    rng = np.random.default_rng(seed)
    regions = any(isinstance(v, list) for v in labels.values())
    dataset = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": len(CASES), "file_ending": ".nii.gz",
               **({"regions_class_order": [1, 2, 3]} if regions else {})}
    plans = nnunet_plans(configurations)
    raw, preprocessed = root / "nnUNet_raw" / DATASET, root / "nnUNet_preprocessed" / DATASET
    references = {}
    for case in CASES:
        reference = reference_case(rng, touching=regions)
        if regions:                    # nested structures: 3 inside 2, against 1 (a tumour's parts)
            reference[(reference == 4) | (reference == 3)] = 0
            inside = np.argwhere(reference == 2)[0]
            reference[inside[0]:inside[0] + 2, inside[1] + 1:inside[1] + 3, inside[2] + 1:inside[2] + 3] = 3
        references[case] = write_label_map(reference, raw / "labelsTr" / f"{case}.nii.gz")
        write_label_map(reference, preprocessed / "gt_segmentations" / f"{case}.nii.gz")
    for folder in (raw, preprocessed):
        (folder / "dataset.json").write_text(json.dumps(dataset))
    (preprocessed / "nnUNetPlans.json").write_text(json.dumps(plans))
    candidates = []
    for number, configuration in enumerate(configurations):
        model = root / "nnUNet_results" / DATASET / f"{TRAINER_PLANS}{configuration}"
        predictions = {}
        for fold, cases in FOLDS.items():
            validation = model / f"fold_{fold}" / "validation"
            for case in cases:
                reference = read_any(references[case]).array
                predicted = predicted_case(rng, reference, errors=errors[number])
                path = write_label_map(predicted, validation / f"{case}.nii.gz")
                np.savez_compressed(validation / f"{case}.npz", probabilities=probabilities_for(
                    rng, predicted, regions, reference if informed else None))
                with open(validation / f"{case}.pkl", "wb") as handle:
                    pickle.dump(SimpleITKIO().read_seg(str(path))[1], handle)
                predictions[case] = path
        (model / "plans.json").write_text(json.dumps(plans))
        (model / "dataset.json").write_text(json.dumps(dataset))
        candidates.append(CrossValidationPredictions(f"{TRAINER_PLANS}{configuration}", predictions))
    return {"candidates": candidates, "references": references, "scheme": LabelScheme.from_dataset_json(dataset)}


# ------------------------------------------------------------------------------------------------ the oracle

class _InProcessPool:
    """nnunetv2 spreads its work over spawned processes; the same calls, in this process (seconds, not minutes)."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def starmap(self, function, arguments):
        return [function(*a) for a in arguments]


@pytest.fixture
def nnunet_environment(tmp_path, monkeypatch):
    """nnunetv2 reads its folders from the environment when imported; point them at scratch space."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(tmp_path / name))
    pytest.importorskip("nnunetv2", reason="nnunetv2 (the oracle) is not installed")
    import nnunetv2.paths

    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setattr(nnunetv2.paths, name, str(tmp_path / name))
    spawning = multiprocessing.get_context

    def in_process(method=None):
        context = spawning(method)
        return type("InProcess", (), {"Pool": _InProcessPool, "__getattr__": lambda self, a: getattr(context, a)})()

    monkeypatch.setattr(multiprocessing, "get_context", in_process)
    return tmp_path


def nnunet_selection(configurations, folds=(0, 1)) -> dict:
    """nnunetv2's find_best_configuration on the laid-out folders (its path globals patched to scratch space)."""
    import nnunetv2.ensembling.ensemble
    import nnunetv2.evaluation.accumulate_cv_results as accumulate
    import nnunetv2.evaluation.find_best_configuration as find_best
    import nnunetv2.paths
    import nnunetv2.postprocessing.remove_connected_components
    import nnunetv2.utilities.file_path_utilities as file_paths

    for module in (find_best, accumulate, file_paths, nnunetv2.ensembling.ensemble,
                   nnunetv2.postprocessing.remove_connected_components):
        for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            if hasattr(module, name):
                setattr(module, name, getattr(nnunetv2.paths, name))
    models = tuple({"plans": "nnUNetPlans", "configuration": c, "trainer": "nnUNetTrainer"} for c in configurations)
    return find_best.find_best_configuration(DATASET, models, allow_ensembling=True, num_processes=1,
                                             overwrite=True, folds=folds, strict=True)


def nnunet_steps(pkl: Path) -> list[tuple]:
    """nnU-Net's postprocessing.pkl as our steps: each kwargs' labels or regions, a tuple of members."""
    with open(pkl, "rb") as handle:
        functions, kwargs = pickle.load(handle)
    assert all(f.__name__ == "remove_all_but_largest_component_from_segmentation" for f in functions)
    steps = []
    for entry in kwargs:
        members = entry["labels_or_regions"]
        steps.append(tuple(members) if isinstance(members, list) else (members,))
    return steps


def nnunet_names(candidates, folds: str = "0_1") -> dict[str, str]:
    """Our candidate names as nnU-Net's: the same for configurations, ``ensemble___A___B___<folds>`` for
    ``ensemble__A__B``."""
    names = {c.name: c.name for c in candidates}
    for i, first in enumerate(candidates):
        for second in candidates[i + 1:]:
            names[f"ensemble__{first.name}__{second.name}"] = f"ensemble___{first.name}___{second.name}___{folds}"
    return names


@pytest.mark.parametrize("labels, errors, informed, winner", [
    (LABELS, (1.0, 2.0), False, f"{TRAINER_PLANS}2d"),
    (REGIONS, (1.0, 1.5), True, f"ensemble__{TRAINER_PLANS}2d__{TRAINER_PLANS}3d_fullres"),
], ids=["labels-with-ignore-single-best", "regions-ensemble-best"])
def test_selection_and_postprocessing_match_nnunetv2(nnunet_environment, labels, errors, informed, winner):
    """The same Dice for every configuration and ensemble, the same winner, the same post-processing steps and
    numbers as nnunetv2's find_best_configuration (labels with an ignore label, a single configuration winning;
    regions, an ensemble winning)."""
    root = nnunet_environment
    inputs = layout(root, labels, errors, informed)
    theirs = nnunet_selection(["2d", "3d_fullres"])
    ours = select_configuration(inputs["candidates"], inputs["references"], inputs["scheme"], root / "ours",
                                file_ending=".nii.gz")

    names = nnunet_names(inputs["candidates"])
    assert len(ours["all_results"]) == len(theirs["all_results"]) == 3
    for name, value in ours["all_results"].items():
        assert value == pytest.approx(theirs["all_results"][names[name]], abs=1e-6)
    best = ours["best_model_or_ensemble"]
    assert best["name"] == winner
    their_best = theirs["best_model_or_ensemble"]
    assert [f"{TRAINER_PLANS}{c['configuration']}" for c in their_best["selected_model_or_models"]] == \
        [name for name in best["configurations"]]
    assert best["result_on_crossval_pre_pp"] == pytest.approx(their_best["result_on_crossval_pre_pp"], abs=1e-6)
    assert best["result_on_crossval_post_pp"] == pytest.approx(their_best["result_on_crossval_post_pp"], abs=1e-6)

    source = Path(their_best["postprocessing_file"]).parent
    expected_steps = nnunet_steps(source / "postprocessing.pkl")
    decided = json.loads((root / "ours" / "postprocessing.json").read_text())
    assert PostprocessingRule.load(root / "ours" / "postprocessing.json").steps == tuple(expected_steps)
    assert len(expected_steps) >= 1                                   # the data makes some step worth it
    their_numbers = json.loads((source / "postprocessing.json").read_text())
    for stage, their_stage in (("before", "input_folder"), ("after", "postprocessed")):
        ours_stage = decided["cross_validation_dice"][stage]
        assert ours_stage["foreground_mean"] == pytest.approx(their_stage_value(their_numbers, their_stage), abs=1e-6)
        for key, value in their_numbers[their_stage]["mean"].items():
            assert ours_stage["mean"][key] == pytest.approx(value["Dice"], abs=1e-6)

    # per configuration: the same per-label means nnU-Net's accumulated cross-validation summary holds
    for candidate in inputs["candidates"]:
        summary = json.loads((root / "nnUNet_results" / DATASET / candidate.name / "crossval_results_folds_0_1"
                              / "summary.json").read_text())
        mine = json.loads((root / "ours" / candidate.name / "summary.json").read_text())
        for key, value in summary["mean"].items():
            assert mine["mean"][key] == pytest.approx(value["Dice"], abs=1e-6, nan_ok=True)


def their_stage_value(numbers: dict, stage: str) -> float:
    return numbers[stage]["foreground_mean"]["Dice"]


def test_postprocessing_alone_matches_nnunetv2_when_all_foreground_is_kept(nnunet_environment):
    """Touching structures and distant specks: keeping the largest foreground component is accepted first, then
    decided per label on what it left, by nnunetv2's determine_postprocessing on one folder."""
    from nnunetv2.postprocessing.remove_connected_components import determine_postprocessing as theirs

    root = nnunet_environment
    rng = np.random.default_rng(3)
    predictions, references = {}, {}
    for case in CASES:
        reference = reference_case(rng, touching=True)
        reference[reference == 3] = 0                                  # one connected foreground per case
        predicted = predicted_case(rng, reference, errors=1.0)
        references[case] = write_label_map(reference, root / "gt" / f"{case}.nii.gz")
        predictions[case] = write_label_map(predicted, root / "pred" / f"{case}.nii.gz")
    dataset = {"labels": {"background": 0, "liver": 1, "spleen": 2, "kidneys": 3}, "file_ending": ".nii.gz"}
    functions, kwargs = theirs(str(root / "pred"), str(root / "gt"), nnunet_plans(["3d_fullres"]), dataset,
                               num_processes=1)
    decision = determine_postprocessing(predictions, references, LabelScheme.from_dataset_json(dataset))
    assert decision.rule.steps[0] == (1, 2, 3) == tuple(kwargs[0]["labels_or_regions"])
    assert decision.rule.steps == tuple(tuple(k["labels_or_regions"]) if isinstance(k["labels_or_regions"], list)
                                        else (k["labels_or_regions"],) for k in kwargs)
    numbers = json.loads((root / "pred" / "postprocessing.json").read_text())
    assert decision.after.foreground_mean == pytest.approx(numbers["postprocessed"]["foreground_mean"]["Dice"],
                                                           abs=1e-6)
    assert decision.after.foreground_mean > decision.before.foreground_mean
    for trial in decision.trials:                                      # every number behind the rule is stated
        assert trial.accepted == (trial.step in decision.rule.steps)


# ---------------------------------------------------------------------------------------- rules and bad input

def test_keep_largest_foreground_component_is_nnunets_rule():
    labels = np.zeros((5, 9), np.uint8)
    labels[0:2, 0:2] = 1
    labels[2, 2] = 2                   # touches label 1 only at a corner: one component with full connectivity
    labels[4, 6:9] = 1                 # three voxels, as large as ...
    labels[0, 6:9] = 3                 # ... these three: ties are all kept
    kept = keep_largest_foreground_component(labels, [1, 2])
    assert kept[2, 2] == 2 and kept[4, 6:9].tolist() == [0, 0, 0]    # 5-voxel piece kept, the 3-voxel one removed
    assert np.array_equal(kept[0, 6:9], labels[0, 6:9])            # label 3 not a member: untouched
    tied = np.zeros((3, 7), np.uint8)
    tied[0, 0:2], tied[2, 5:7] = 1, 1
    assert np.array_equal(keep_largest_foreground_component(tied, [1]), tied)
    region = keep_largest_foreground_component(labels, [(1, 2), 3])  # a region and a label reduced together
    assert region[2, 2] == 2 and region[0, 6:9].tolist() == [0, 0, 0]


def test_dice_rules_ignore_label_and_empty_cases(tmp_path):
    scheme = LabelScheme.from_dataset_json({"labels": LABELS})
    assert scheme.scored == (1, 2, 3) and scheme.ignore_label == 4
    reference = np.zeros((1, 4, 4), np.uint8)
    reference[0, :2, :2] = 1
    reference[0, 3, :] = 4
    predicted = np.zeros_like(reference)
    predicted[0, :2, :3] = 1           # 4 right, 2 wrong
    predicted[0, 3, :] = 2             # on the ignore label: not counted
    paths = {"a": (write_label_map(reference, tmp_path / "gt" / "a.nii.gz"),
                   write_label_map(predicted, tmp_path / "pred" / "a.nii.gz"))}
    summary = score_predictions({c: p for c, (_, p) in paths.items()}, {c: r for c, (r, _) in paths.items()}, scheme)
    assert summary.mean[1] == pytest.approx(2 * 4 / (2 * 4 + 2))
    assert np.isnan(summary.mean[2]) and np.isnan(summary.mean[3])   # absent from both maps: undefined
    assert np.isnan(summary.foreground_mean)                          # nnU-Net's mean of means, NaN included


def bad_inputs(tmp_path: Path) -> dict:
    rng = np.random.default_rng(0)
    references, labels = {}, {"a": {}, "b": {}}
    for case in CASES[:3]:
        reference = reference_case(rng, touching=False)
        references[case] = write_label_map(reference, tmp_path / "gt" / f"{case}.nii.gz")
        for name in labels:
            predicted = predicted_case(rng, reference, 1.0)
            labels[name][case] = write_label_map(predicted, tmp_path / name / f"{case}.nii.gz")
            np.savez_compressed(tmp_path / name / f"{case}.npz", probabilities=probabilities_for(rng, predicted, False))
    return {"references": references, "labels": labels}


@pytest.mark.parametrize("damage", ["prediction missing", "probabilities missing", "reference missing",
                                    "shape mismatch", "shape mismatch without ensembles", "duplicate names"])
def test_bad_input_is_one_clear_error_and_nothing_is_written(tmp_path, damage):
    inputs = bad_inputs(tmp_path)
    labels, references = inputs["labels"], inputs["references"]
    named = {"prediction missing": labels["b"]["case_01"], "probabilities missing": tmp_path / "a" / "case_02.npz",
             "reference missing": references["case_00"]}.get(damage, labels["a"]["case_02"])
    if damage.startswith("shape mismatch"):
        named.unlink()
        write_label_map(np.zeros((6, 20, 21), np.uint8), named)
    elif damage != "duplicate names":
        named.unlink()
    candidates = [CrossValidationPredictions(name, files) for name, files in labels.items()]
    scheme = LabelScheme.from_dataset_json({"labels": LABELS})
    output = tmp_path / "selection"
    select = partial(select_configuration, references=references, scheme=scheme, output=output,
                     file_ending=".nii.gz", allow_ensembling=damage != "shape mismatch without ensembles")
    if damage == "duplicate names":
        with pytest.raises(ValueError, match="distinct names"):
            select([candidates[0], candidates[0]])
    else:
        with pytest.raises((FileNotFoundError, ValueError)) as error:
            select(candidates)
        assert str(named) in str(error.value)
        if damage == "shape mismatch without ensembles":
            assert str(references["case_02"]) in str(error.value) and "(6, 20, 21)" in str(error.value)
    assert not output.exists() and not list(tmp_path.glob(".selection*"))   # nothing partially written
    output.mkdir()
    with pytest.raises(FileExistsError, match="selection exists"):
        select(candidates)


def test_a_postprocessing_file_is_checked_when_read(tmp_path):
    assert PostprocessingRule.from_json([[1, 2], [[2, 3]]]).steps == ((1, 2), ((2, 3),))
    for document, message in (({"format": "other"}, "not a gnnseg post-processing file"),
                              ({"format": "gnnseg.postprocessing/1", "steps": [[0]]}, "integers >= 1"),
                              ({"format": "gnnseg.postprocessing/1", "steps": [[]]}, "non-empty lists")):
        path = tmp_path / "pp.json"
        path.write_text(json.dumps(document))
        with pytest.raises(ValueError, match=message):
            PostprocessingRule.load(path)
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        PostprocessingRule.load(tmp_path / "nowhere.json")


def test_a_rule_naming_labels_the_model_lacks_is_refused():
    rule = PostprocessingRule(((1, 2), (3,), ((2, 7),)))
    rule.check_labels([1, 2, 3, 7])
    with pytest.raises(ValueError, match=r"names labels \[7\] that Dataset1 does not predict \(its foreground labels: "
                                         r"\[1, 2, 3\]\)"):
        rule.check_labels([1, 2, 3], "Dataset1")


# ------------------------------------------------------------------------------ from trained folds to prediction

def run_cli(last_json, *args):
    assert main([*map(str, args), "--json"]) == 0
    return last_json()


def test_trained_folds_to_selected_postprocessed_predictions(tmp_path, last_json, capsys, monkeypatch, one_thread):
    """Two folds of a tiny 2D run keep their validation predictions; find-best-configuration selects and decides
    post-processing on them; predict applies it."""
    from tests.seg.test_unet_pipeline import squares_dataset

    dataset = squares_dataset(tmp_path / "raw")
    work, runs = tmp_path / "work", tmp_path / "runs"
    run = partial(run_cli, last_json)
    run("seg", "plan", dataset.root, "--work-dir", work, "--base-features", "4", "--device", "cpu", "--memory-gb", "1")
    run("seg", "preprocess", work, "-c", "2d")
    trained = [run("seg", "train", work, "-c", "2d", "-f", fold, "--epochs", "1", "--iterations", "2",
                   "--runs-dir", runs)["run_dir"] for fold in (0, 1)]
    for run_dir in trained:
        validation = Path(run_dir) / "validation"
        cases = json.loads((Path(run_dir) / "train_config.json").read_text())["val_cases"]
        assert sorted(p.name for p in validation.iterdir()) == sorted(
            [f"{c}.png" for c in cases] + [f"{c}.npz" for c in cases])
        with np.load(validation / f"{cases[0]}.npz") as stored:
            assert stored["probabilities"].shape == (2, 40, 40)
            assert np.array_equal(stored["probabilities"].argmax(0), read_image_2d(validation / f"{cases[0]}.png")
                                  .array)

    selected = run("seg", "find-best-configuration", work, "-c", "2d", "-f", "0", "1", "--runs-dir", runs)
    folder = Path(selected["output"])
    assert folder == work / "model_selection_folds_0_1"
    assert list(selected["all_results"]) == ["2d"] and selected["best_model_or_ensemble"]["configurations"] == ["2d"]
    assert selected["runs"]["2d"] == {"0": trained[0], "1": trained[1]}
    assert selected["how_to_predict"] == [f"gnnseg seg predict -i INPUT -o OUTPUT -m {trained[0]} {trained[1]} "
                                          f"--postprocessing {folder / 'postprocessing.json'}"]
    postprocessing = folder / "postprocessing.json"
    decided = json.loads(postprocessing.read_text())
    assert [trial["keep_largest_component_of"] for trial in decided["trials"]] == [[1]]   # one label: one trial
    assert main(["seg", "find-best-configuration", str(work), "-c", "2d", "-f", "0", "1", "--runs-dir",
                 str(runs)]) == 2                                     # the earlier selection is never replaced
    assert main(["seg", "find-best-configuration", str(work), "-c", "2d", "-f", "0", "1", "2", "--runs-dir",
                 str(runs), "-o", str(tmp_path / "more")]) == 2
    assert "no run of configuration 2d fold 2" in capsys.readouterr().err
    assert not (tmp_path / "more").exists()
    shutil.copytree(trained[0], runs / "seg-train" / "a-copy-of-fold-0")          # two candidates for fold 0
    assert main(["seg", "find-best-configuration", str(work), "-f", "0", "1", "--runs-dir", str(runs), "-o",
                 str(tmp_path / "ambiguous")]) == 2
    assert "fold 0 has 2 runs" in capsys.readouterr().err and not (tmp_path / "ambiguous").exists()
    chosen = run("seg", "find-best-configuration", work, "-f", "0", "1", "--run", trained[0], "--run", trained[1],
                 "-o", tmp_path / "chosen")
    assert chosen["all_results"] == selected["all_results"]

    always = tmp_path / "always.json"                                 # a rule that keeps one component, to see it
    always.write_text(json.dumps({**decided, "steps": [[1]]}))
    monkeypatch.setattr("gnnseg.seg.unet.pipeline.segment_image", speckled_prediction)
    raw = run("seg", "predict", "-i", dataset.root / "imagesTr", "-o", tmp_path / "raw_pred", "-m", trained[0])
    kept = run("seg", "predict", "-i", dataset.root / "imagesTr", "-o", tmp_path / "pp_pred", "-m", trained[0],
               "--postprocessing", always)
    assert kept["postprocessing"]["steps"] == [[1]]
    for before, after in zip(raw["predictions"], kept["predictions"], strict=True):
        expected = keep_largest_foreground_component(read_image_2d(before).array, [1])
        assert read_image_2d(before).array[0, 0] == 1 and read_image_2d(after).array[0, 0] == 0
        assert np.array_equal(read_image_2d(after).array, expected)
    assert main(["seg", "predict", "-i", str(dataset.root / "imagesTr"), "-o", str(tmp_path / "x"), "-m", trained[0],
                 "--postprocessing", str(always), "--keep-largest", "1"]) == 2
    assert main(["seg", "predict", "-i", str(dataset.root / "imagesTr"), "-o", str(tmp_path / "y"), "-m", trained[0],
                 "--postprocessing", str(tmp_path / "missing.json")]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def speckled_prediction(network, channels, plans, configuration, **options) -> tuple[MedicalImage, np.ndarray]:
    """A prediction with a large square and one stray speck, whatever the network says."""
    labels = np.zeros(channels[0].array.shape[:2], np.uint8)
    labels[10:20, 10:20] = 1
    labels[0, 0] = 1
    return MedicalImage(labels, channels[0].spacing, channels[0].affine), np.stack([1.0 - labels, labels])
