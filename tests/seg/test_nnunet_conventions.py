"""nnU-Net users' conventions: dataset IDs through nnUNet_raw / nnUNet_preprocessed / nnUNet_results, gnnseg's
training in nnU-Net's results layout (with its text log, and resumed with --c), and prediction as nnUNetv2_predict
makes it by default (every fold ensembled, mirroring on, --save-probabilities)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from gnnseg.cli import main
from gnnseg.seg.io import read_any, read_image_2d
from gnnseg.seg.unet.fold_ensemble import open_trained_folds
from gnnseg.seg.unet.inference_network import prediction_network
from gnnseg.seg.unet.nnunet_paths import base_folder, dataset_folder, dataset_name
from gnnseg.seg.unet.pipeline import segment_image
from tests.seg.test_unet_pipeline import squares_dataset

NAME = "Dataset042_Squares"
MODEL = "gnnsegTrainer__gnnsegPlans__2d"
EPOCH_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: epoch (\d+)/(\d+) train_loss -?\d+\.\d{4} "
                        r"val_loss -?\d+\.\d{4} pseudo_dice \[\d\.\d{4}\] mean \d\.\d{4} ema \d\.\d{4}( \(new best\))? "
                        r"lr \d\.\d{6} epoch_time \d+\.\d\d s$")


def nnunet_folders(root: Path) -> dict[str, str]:
    folders = {variable: root / variable for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return {variable: str(folder) for variable, folder in folders.items()}


def test_dataset_ids_resolve_as_nnunet_resolves_them(tmp_path):
    environment = nnunet_folders(tmp_path)
    (tmp_path / "nnUNet_raw" / "Dataset501_Liver").mkdir()
    (tmp_path / "nnUNet_results" / "Dataset501_Liver").mkdir()          # the same dataset in two folders: one name
    (tmp_path / "nnUNet_raw" / "Dataset007_Lung").mkdir()
    (tmp_path / "nnUNet_preprocessed" / "Dataset012_A").mkdir()
    (tmp_path / "nnUNet_results" / "Dataset012_B").mkdir()
    (tmp_path / "nnUNet_raw" / "Dataset5010_Other").mkdir()            # four digits: not ID 501
    assert dataset_name(501, environment) == dataset_name("501", environment) == "Dataset501_Liver"
    assert dataset_name("7", environment) == dataset_name("007", environment) == "Dataset007_Lung"
    assert dataset_name("Dataset501_Liver", environment) == "Dataset501_Liver"
    assert dataset_folder(7, "nnUNet_raw", environment=environment) == tmp_path / "nnUNet_raw" / "Dataset007_Lung"
    with pytest.raises(FileNotFoundError, match=r"dataset ID 3: no Dataset003_\* folder in .*nnUNet_raw"):
        dataset_name(3, environment)
    with pytest.raises(ValueError, match="dataset ID 12 is ambiguous: Dataset012_A, Dataset012_B"):
        dataset_name("12", environment)
    with pytest.raises(ValueError, match="give a dataset ID"):
        dataset_name("Liver", environment)
    with pytest.raises(ValueError, match="none of nnUNet_raw, nnUNet_preprocessed, nnUNet_results is set"):
        dataset_name(501, {})
    assert dataset_name(7, {"nnUNet_raw": environment["nnUNet_raw"]}) == "Dataset007_Lung"   # those set count
    with pytest.raises(ValueError, match="the environment variable nnUNet_results is not set"):
        base_folder("nnUNet_results", {"nnUNet_raw": environment["nnUNet_raw"]})
    with pytest.raises(FileNotFoundError, match="nowhere: the folder nnUNet_results names does not exist"):
        base_folder("nnUNet_results", {"nnUNet_results": str(tmp_path / "nowhere")})
    with pytest.raises(FileNotFoundError, match="Dataset007_Lung: dataset folder missing in nnUNet_preprocessed"):
        dataset_folder(7, "nnUNet_preprocessed", environment=environment)


def cli(*args) -> dict:
    """``gnnseg ARGS --json``, which must succeed; its answer."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([*map(str, args), "--json"]) == 0
    return json.loads(printed.getvalue().strip().splitlines()[-1])


NNUNET_FINGERPRINT = '{"spacings": [[999.0, 1.0, 1.0]], "shapes_after_crop": [[1, 40, 40]]}'
"""What nnUNetv2_plan_and_preprocess leaves in nnUNet_preprocessed/DatasetXXX_Name (abridged)."""

TRAIN = ("seg", "train", "-d", "42", "-c", "2d", "--iterations", "2")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The squares dataset as nnU-Net's Dataset042_Squares: planned, preprocessed, folds 0 and 1 trained one epoch
    by ID, fold 0 continued for a second epoch with --c."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # tiny networks (the one_thread fixture is per test, this is per module)
    root = tmp_path_factory.mktemp("nnunet")
    environment = nnunet_folders(root)
    dataset = squares_dataset(root / "nnUNet_raw" / NAME)
    (root / "nnUNet_preprocessed" / NAME).mkdir()
    (root / "nnUNet_preprocessed" / NAME / "dataset_fingerprint.json").write_text(NNUNET_FINGERPRINT)
    with pytest.MonkeyPatch.context() as patch:
        for variable, value in environment.items():
            patch.setenv(variable, value)
        planned = cli("seg", "plan", "-d", "42", "--base-features", "4", "--device", "cpu", "--memory-gb", "1")
        preprocessed = cli("seg", "preprocess", "-d", "Dataset042_Squares", "-c", "2d")
        folds = [cli(*TRAIN, "-f", fold, "--epochs", "1") for fold in (0, 1)]
        continued = cli(*TRAIN, "-f", "0", "--epochs", "2", "--c")
        yield {"root": root, "dataset": dataset, "planned": planned, "preprocessed": preprocessed, "folds": folds,
               "continued": continued, "model": root / "nnUNet_results" / NAME / MODEL}
    torch.set_num_threads(threads)


def test_training_by_id_writes_nnunets_results_layout_and_log(trained):
    root, model = trained["root"], trained["model"]
    assert trained["planned"]["work_dir"] == str(root / "nnUNet_preprocessed" / NAME)
    assert (root / "nnUNet_preprocessed" / NAME / "plans.json").is_file()
    assert (root / "nnUNet_preprocessed" / NAME / "dataset_fingerprint.json").read_text() == NNUNET_FINGERPRINT
    assert trained["planned"]["fingerprint"] == str(root / "nnUNet_preprocessed" / NAME /
                                                    "gnnseg_dataset_fingerprint.json")
    assert json.loads(Path(trained["planned"]["fingerprint"]).read_text())["num_training"] == 6
    assert trained["preprocessed"]["cases"] == 6
    assert sorted(path.name for path in model.iterdir()) == ["dataset.json", "fold_0", "fold_1", "plans.json"]
    assert json.loads((model / "dataset.json").read_text()) == json.loads(
        (root / "nnUNet_raw" / NAME / "dataset.json").read_text())
    assert json.loads((model / "plans.json").read_text()) == json.loads(
        (root / "nnUNet_preprocessed" / NAME / "plans.json").read_text())
    assert [fold["run_dir"] for fold in trained["folds"]] == [str(model / "fold_0"), str(model / "fold_1")]
    for fold, epochs in (("fold_0", 2), ("fold_1", 1)):
        files = {path.name for path in (model / fold).iterdir()}
        assert {"checkpoint_final.pth", "checkpoint_best.pth", "checkpoint_latest.pth", "progress.png",
                "validation", "train_config.json", "summary.json"} <= files
        assert not {name for name in files if name.endswith(".pt")}
        final = torch.load(model / fold / "checkpoint_final.pth", weights_only=True)
        latest = torch.load(model / fold / "checkpoint_latest.pth", weights_only=True)
        assert final["epoch"] == latest["epoch"] == epochs
        torch.testing.assert_close(final["network"], latest["network"])
        logs = sorted((model / fold).glob("training_log_*.txt"))
        assert logs and all(re.fullmatch(r"training_log_\d{4}_\d{1,2}_\d{1,2}_\d\d_\d\d_\d\d\.txt", log.name)
                            for log in logs)
        lines = [line for log in logs for line in log.read_text().splitlines()]
        epoch_lines = [line for line in lines if EPOCH_LINE.match(line)]
        assert [EPOCH_LINE.match(line).group(1, 2) for line in epoch_lines] == (
            [("1", "1"), ("2", "2")] if epochs == 2 else [("1", "1")])
        assert len(lines) == len(epoch_lines) + (2 if epochs == 2 else 1)        # a header per start of training
    headers = [line for log in (model / "fold_0").glob("training_log_*.txt") for line in log.read_text().splitlines()
               if "training configuration 2d fold 0" in line]
    assert sum("resumed from checkpoint_latest.pth" in line for line in headers) == 1


def test_a_trained_fold_is_continued_with_c_and_never_restarted(trained, capsys):
    fold_0 = trained["model"] / "fold_0"
    before = (fold_0 / "checkpoint_final.pth").read_bytes()
    assert main([*TRAIN, "-f", "0", "--epochs", "2"]) == 2
    assert "holds a trained fold; continue it with --c" in capsys.readouterr().err
    assert main([*TRAIN, "-f", "3", "--epochs", "2", "--c"]) == 2
    assert "cannot continue" in capsys.readouterr().err and not (trained["model"] / "fold_3").exists()
    assert main([*TRAIN, "-f", "0", "--epochs", "2", "--runs-dir", "elsewhere"]) == 2
    assert "drop --runs-dir" in capsys.readouterr().err
    assert (fold_0 / "checkpoint_final.pth").read_bytes() == before
    assert trained["continued"]["epochs"] == 2


def predict(trained, output, *options) -> dict:
    return cli("seg", "predict", "-i", trained["dataset"].root / "imagesTr", "-o", trained["root"] / output,
               *options)


def probabilities_of(prediction: dict) -> dict[str, np.ndarray]:
    arrays = {}
    for path in prediction["predictions"]:
        with np.load(Path(path).with_suffix(".npz")) as stored:
            arrays[Path(path).stem] = stored["probabilities"]
    return arrays


def test_predicting_by_id_ensembles_every_fold_by_its_mean_logits(trained):
    both = predict(trained, "both", "-d", "42", "-c", "2d", "--save-probabilities")
    assert both["model"] == [str(trained["model"] / "fold_0"), str(trained["model"] / "fold_1")]
    assert both["checkpoint"] == "checkpoint_final.pth" and both["mirror_axes"] == [0, 1]
    chosen = predict(trained, "chosen", "-d", "Dataset042_Squares", "-c", "2d", "-f", "0", "1", "-tr",
                     "gnnsegTrainer", "-p", "gnnsegPlans", "--save-probabilities")
    alone = [probabilities_of(predict(trained, f"fold{fold}", "-m", trained["model"], "-f", fold,
                                      "--save-probabilities")) for fold in (0, 1)]
    ensembled = probabilities_of(both)
    assert ensembled.keys() == alone[0].keys() and len(ensembled) == 6
    for case, probabilities in ensembled.items():
        np.testing.assert_array_equal(probabilities, probabilities_of(chosen)[case])
        # squares need no resampling or cropping, so each fold's log-probabilities are its logits up to a constant
        # per pixel: the folds' mean logits are the mean of their log-probabilities
        mean_logits = torch.from_numpy((np.log(alone[0][case]) + np.log(alone[1][case])) / 2)
        np.testing.assert_allclose(probabilities, mean_logits.softmax(0).numpy(), atol=2e-5)
        labels = read_image_2d(trained["root"] / "both" / f"{case}.png").array
        np.testing.assert_array_equal(labels, probabilities.argmax(0))
        properties = json.loads((trained["root"] / "both" / f"{case}.json").read_text())
        assert properties == {"classes": [0, 1], "configuration": "2d", "shape": [40, 40], "spacing": [1.0, 1.0]}
        assert probabilities.shape == (2, 40, 40) and probabilities.dtype == np.float32
    differs = max(np.abs(ensembled[case] - alone[0][case]).max() for case in ensembled)
    assert differs > 1e-4                                                       # the second fold counts
    # nnU-Net v2 averages logits, not probabilities; here the two differ by far more than the tolerance above
    assert max(np.abs(ensembled[case] - (alone[0][case] + alone[1][case]) / 2).max() for case in ensembled) > 1e-3


def test_disable_tta_turns_mirroring_off(trained):
    mirrored = probabilities_of(predict(trained, "mirrored", "-d", "42", "-c", "2d", "-f", "0",
                                        "--save-probabilities"))
    plain = predict(trained, "plain", "-d", "42", "-c", "2d", "-f", "0", "--save-probabilities", "--disable-tta")
    assert plain["mirror_axes"] == []
    folds = open_trained_folds([trained["model"]], ["0"], checkpoint="checkpoint_final.pth")
    network = prediction_network(folds.network, "float32", torch.device("cpu"))   # as the command predicts
    changed = 0.0
    for case, probabilities in probabilities_of(plain).items():
        image = read_any(trained["dataset"].root / "imagesTr" / f"{case}_0000.png")
        _, expected = segment_image(network, [image], folds.plans, folds.configuration, mirror_axes=())
        np.testing.assert_allclose(probabilities, expected, atol=1e-6)
        changed = max(changed, float(np.abs(probabilities - mirrored[case]).max()))
    assert changed > 1e-4


def test_nothing_is_written_when_a_prediction_is_refused(trained, capsys, monkeypatch):
    root = trained["root"]
    inputs = ["-i", str(trained["dataset"].root / "imagesTr")]
    refusals = {
        "missing_fold": (["-d", "42", "-c", "2d", "-f", "0", "7"], "fold_7/checkpoint_final.pth: checkpoint missing"),
        "no_model": (["-d", "42", "-c", "3d_fullres"], f"{MODEL}; choose one with -tr"),
        "unknown_id": (["-d", "43", "-c", "2d"], "no Dataset043_* folder"),
        "no_configuration": (["-d", "42"], "-d needs -c CONFIGURATION"),
        "both": (["-d", "42", "-c", "2d", "-m", str(trained["model"])], "give either -m MODEL_DIR or -d"),
        "fold_twice": (["-m", str(trained["model"] / "fold_0"), str(trained["model"] / "fold_0")],
                       "several runs train fold 0; a model ensembles one run per fold"),
    }
    for output, (options, message) in refusals.items():
        assert main(["seg", "predict", *inputs, "-o", str(root / f"refused_{output}"), *options]) == 2
        assert message in capsys.readouterr().err
        assert not (root / f"refused_{output}").exists()
    taken = root / "taken"
    taken.mkdir()
    (taken / "sq3.npz").write_bytes(b"mine")
    assert main(["seg", "predict", *inputs, "-o", str(taken), "-d", "42", "-c", "2d", "--save-probabilities"]) == 2
    assert "1 outputs already exist" in capsys.readouterr().err
    assert sorted(path.name for path in taken.iterdir()) == ["sq3.npz"] and (taken / "sq3.npz").read_bytes() == b"mine"
    for plan in (["-d", "42", "--work-dir", str(root / "elsewhere")], [str(trained["dataset"].root), "-d", "42"]):
        assert main(["seg", "plan", *plan]) == 2
        assert "-d" in capsys.readouterr().err and not (root / "elsewhere").exists()
    monkeypatch.delenv("nnUNet_results")
    assert main(["seg", "predict", *inputs, "-o", str(root / "unset"), "-d", "42", "-c", "2d"]) == 2
    assert "the environment variable nnUNet_results is not set" in capsys.readouterr().err
    assert main([*TRAIN, "-f", "2"]) == 2 and not (root / "unset").exists()
    monkeypatch.delenv("nnUNet_preprocessed")
    assert main(["seg", "preprocess", "-d", "42"]) == 2
    assert "nnUNet_preprocessed is not set" in capsys.readouterr().err


def test_model_selection_by_id_finds_the_folds_in_the_results_folder(trained):
    selected = cli("seg", "find-best-configuration", "-d", "42", "-c", "2d", "-f", "0", "1")
    folder = trained["root"] / "nnUNet_results" / NAME / "model_selection_folds_0_1"
    assert selected["output"] == str(folder) and (folder / "postprocessing.json").is_file()
    assert selected["runs"]["2d"] == {"0": str(trained["model"] / "fold_0"), "1": str(trained["model"] / "fold_1")}
    assert selected["how_to_predict"] == [f"gnnseg seg predict -i INPUT -o OUTPUT -m {trained['model']} -f 0 1 "
                                          f"--postprocessing {folder / 'postprocessing.json'}"]
    assert main(["seg", "find-best-configuration", "-d", "42", "-tr", "otherTrainer", "-f", "0", "1", "-o",
                 str(trained["root"] / "other")]) == 2
    assert not (trained["root"] / "other").exists()


def test_a_gnnseg_model_folder_exports_to_onnx_with_its_folds(trained):
    pytest.importorskip("onnxruntime", reason="the ONNX export needs onnx and onnxruntime (gnnseg[onnx])")
    exported = cli("seg", "export-onnx", "--unet", trained["model"], "-o", trained["root"] / "onnx")
    assert [Path(path).name for path in exported["graphs"]] == ["fold_0.onnx", "fold_1.onnx"]
    by_torch = predict(trained, "torch_both", "-m", trained["model"])
    by_onnx = predict(trained, "onnx_both", "-m", trained["root"] / "onnx")
    assert by_onnx["folds"] == 2 and by_onnx["mirror_axes"] == by_torch["mirror_axes"] == [0, 1]
    for ours, theirs in zip(by_torch["predictions"], by_onnx["predictions"], strict=True):
        np.testing.assert_array_equal(read_image_2d(theirs).array, read_image_2d(ours).array)


def test_seg_ensemble_averages_saved_probabilities_then_applies_the_rule(trained, capsys):
    from gnnseg.seg.unet.postprocess import POSTPROCESSING_FORMAT, PostprocessingRule

    root = trained["root"]
    alone = [probabilities_of(predict(trained, f"alone{fold}", "-m", trained["model"], "-f", fold,
                                      "--save-probabilities")) for fold in (0, 1)]
    assert json.loads((root / "alone0" / "dataset.json").read_text()) == {
        "labels": {"background": 0, "square": 1}, "file_ending": ".png"}
    plain = cli("seg", "ensemble", "-i", root / "alone0", root / "alone1", "-o", root / "ensembled")
    rule = root / "rule.json"
    rule.write_text(json.dumps({"format": POSTPROCESSING_FORMAT, "steps": [[1]]}))
    ruled = cli("seg", "ensemble", "-i", root / "alone0", root / "alone1", "-o", root / "ruled",
                "--postprocessing", rule)
    assert len(plain["predictions"]) == 6 and ruled["postprocessing"]["steps"] == [[1]]
    changed = 0
    for path, kept in zip(plain["predictions"], ruled["predictions"], strict=True):
        case = Path(path).stem
        expected = ((alone[0][case] + alone[1][case]) / 2).argmax(0)            # nnUNetv2_ensemble: mean probabilities
        np.testing.assert_array_equal(read_image_2d(path).array, expected)
        np.testing.assert_array_equal(read_image_2d(kept).array, PostprocessingRule(((1,),)).apply(expected))
        changed += int((read_image_2d(kept).array != expected).sum())
    assert changed > 0                                            # the rule removed stray components somewhere
    predict(trained, "labels_only", "-m", trained["model"], "-f", "0")
    refusals = {"one folder": (["-i", root / "alone0"], "two or more prediction folders"),
                "no probabilities": (["-i", root / "alone0", root / "labels_only"], "predict into"),
                "taken": (["-i", root / "alone0", root / "alone1", "-o", root / "ensembled"], "not an empty folder")}
    for options, message in refusals.values():
        options = [*map(str, options), *([] if "-o" in options else ["-o", str(root / "never")])]
        assert main(["seg", "ensemble", *options]) == 2
        assert message in capsys.readouterr().err
    assert not (root / "never").exists()
