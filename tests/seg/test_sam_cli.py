"""``gnnseg seg segment | evaluate | finetune`` on small files, with a small checkpoint standing in for the model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gnnseg.cli import main
from gnnseg.seg.io import (
    MedicalImage,
    read_image_2d,
    read_nifti,
    write_image_2d,
    write_nifti,
)
from gnnseg.seg.sam.checkpoint import save_sam
from gnnseg.seg.sam.modeling.sam import SAM_CONFIGS, build_sam


@pytest.fixture
def checkpoint(tmp_path):
    return str(save_sam(build_sam(replace(SAM_CONFIGS["vit_mini"], crop_margin=0.25)), tmp_path / "mini.pt"))


@pytest.fixture
def image_folders(tmp_path):
    rng = np.random.default_rng(0)
    for index in range(2):
        y, x = np.mgrid[:64, :80]
        disk = (y - 30) ** 2 + (x - 40 - index) ** 2 <= 12 ** 2
        image = np.clip(rng.normal(60, 10, (64, 80)) + 120 * disk, 0, 255).astype(np.uint8)
        write_image_2d(image, tmp_path / "images" / f"case{index}.png")
        write_image_2d(disk.astype(np.uint8), tmp_path / "masks" / f"case{index}.png")
    return tmp_path / "images", tmp_path / "masks"


def test_segment_image_writes_a_mask_and_never_overwrites(tmp_path, checkpoint, image_folders, capsys, last_json):
    output = tmp_path / "mask.png"
    args = ["seg", "segment", "--image", str(image_folders[0] / "case0.png"), "--box", "20,10,60,50",
            "--checkpoint", checkpoint, "-o", str(output), "--json"]
    assert main(args) == 0
    result = last_json()
    assert result["objects"] == 1 and read_image_2d(output).array.shape == (64, 80)
    assert set(np.unique(read_image_2d(output).array)) <= {0, 255}
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err


def test_segment_refuses_bad_boxes_and_unreadable_images(tmp_path, checkpoint, image_folders, capsys):
    image = str(image_folders[0] / "case0.png")
    assert main(["seg", "segment", "--image", image, "--box", "60,10,20,50", "--checkpoint", checkpoint,
                 "-o", str(tmp_path / "a.png")]) == 2
    assert "x1 > x0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["seg", "segment", "--image", image, "--box", "1,2,3", "-o", str(tmp_path / "b.png")])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert main(["seg", "segment", "--image", str(tmp_path / "broken.png"), "--box", "1,1,5,5",
                 "--checkpoint", checkpoint, "-o", str(tmp_path / "c.png")]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "c.png").exists()


def test_segment_image_with_clicks_and_a_prompts_file(tmp_path, checkpoint, image_folders, capsys, last_json):
    image = str(image_folders[0] / "case0.png")
    clicked = tmp_path / "clicked.png"
    assert main(["seg", "segment", "--image", image, "--box", "26,16,54,44", "--point", "40,30,1", "--point",
                 "10,5,0", "--checkpoint", checkpoint, "-o", str(clicked), "--json"]) == 0
    assert last_json()["objects"] == 1 and set(np.unique(read_image_2d(clicked).array)) <= {0, 255}
    prompts = tmp_path / "prompts.json"
    prompts.write_text('{"objects": [{"box": [26, 16, 54, 44]}, {"points": [[40, 30]], "labels": [1]}]}')
    assert main(["seg", "segment", "--image", image, "--prompts", str(prompts), "--checkpoint", checkpoint,
                 "-o", str(tmp_path / "two.png"), "--json"]) == 0
    assert last_json()["objects"] == 2 and set(np.unique(read_image_2d(tmp_path / "two.png").array)) <= {0, 1, 2}
    for arguments, message in [
        (["--box", "1,1,9,9", "--box", "2,2,8,8", "--point", "4,4,1"], "at most one --box"),
        (["--point", "100,4,1"], "outside the image"),
        (["--prompts", str(prompts), "--box", "1,1,9,9"], "not both"),
    ]:
        assert main(["seg", "segment", "--image", image, *arguments, "--checkpoint", checkpoint,
                     "-o", str(tmp_path / "bad.png")]) == 2
        assert message in capsys.readouterr().err
    prompts.write_text('{"objects": [{"points": [[40, 30]]}]}')
    assert main(["seg", "segment", "--image", image, "--prompts", str(prompts), "-o", str(tmp_path / "bad.png")]) == 2
    assert "points and labels go together" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["seg", "segment", "--image", image, "--point", "4,4,2", "-o", str(tmp_path / "bad.png")])
    assert not (tmp_path / "bad.png").exists()


def test_evaluate_with_clicks_adds_the_challenge_figures(checkpoint, image_folders, last_json):
    images, masks = image_folders
    assert main(["seg", "evaluate", "--images", str(images), "--masks", str(masks), "--checkpoint", checkpoint,
                 "--clicks", "2", "--json"]) == 0
    interactive = last_json()["interactive"]
    assert interactive["clicks"] == 2 and interactive["objects"] == 2
    assert len(interactive["dsc_per_step"]) == len(interactive["nsd_per_step"]) == 3
    assert interactive["dsc_final"] == pytest.approx(interactive["dsc_per_step"][-1])
    assert 0.0 <= interactive["dsc_auc"] <= 1.0


def test_segment_volume_writes_labels_on_the_volume_grid(tmp_path, checkpoint, capsys):
    volume = np.full((6, 40, 50), -100, dtype=np.int16)
    volume[1:5, 10:30, 15:35] = 60
    affine = np.diag([2.0, 1.5, 1.5, 1.0])
    write_nifti(MedicalImage(volume, (2.0, 1.5, 1.5), affine), tmp_path / "ct.nii.gz")
    output = tmp_path / "labels.nii.gz"
    assert main(["seg", "segment", "--volume", str(tmp_path / "ct.nii.gz"), "--box3d", "15,10,1,34,29,4",
                 "--checkpoint", checkpoint, "-o", str(output), "--json"]) == 0
    labels = read_nifti(output)
    assert labels.array.shape == (6, 40, 50) and np.allclose(labels.spacing, (2.0, 1.5, 1.5))
    assert labels.array[0].max() == 0 and labels.array[5].max() == 0  # outside the box's slices
    # one box alone: both overlap rules paint the same labels; an unknown rule is refused before any work
    baseline = tmp_path / "baseline.nii.gz"
    assert main(["seg", "segment", "--volume", str(tmp_path / "ct.nii.gz"), "--box3d", "15,10,1,34,29,4",
                 "--checkpoint", checkpoint, "--overlaps", "box-order", "-o", str(baseline), "--json"]) == 0
    assert np.array_equal(read_nifti(baseline).array, labels.array)
    with pytest.raises(SystemExit):
        main(["seg", "segment", "--volume", str(tmp_path / "ct.nii.gz"), "--box3d", "15,10,1,34,29,4",
              "--overlaps", "largest", "-o", str(tmp_path / "never.nii.gz")])
    assert not (tmp_path / "never.nii.gz").exists()


def test_evaluate_reports_dsc_nsd_and_count(image_folders, checkpoint, capsys, last_json):
    images, masks = image_folders
    assert main(["seg", "evaluate", "--images", str(images), "--masks", str(masks), "--checkpoint", checkpoint,
                 "--box-margin", "5", "--json"]) == 0
    result = last_json()
    assert result["n"] == 2 and 0 <= result["dsc_mean"] <= 1 and 0 <= result["nsd_mean"] <= 1
    assert len(result["per_object"]) == 2


def test_evaluate_and_segment_take_test_time_augmentation(tmp_path, image_folders, checkpoint, capsys, last_json):
    images, masks = image_folders
    assert main(["seg", "evaluate", "--images", str(images), "--masks", str(masks), "--checkpoint", checkpoint,
                 "--tta", "d4", "--json"]) == 0
    result = last_json()
    assert result["augmentation"] == "d4" and result["n"] == 2 and 0 <= result["dsc_mean"] <= 1
    output = tmp_path / "mask.png"
    args = ["seg", "segment", "--image", str(images / "case0.png"), "--box", "20,10,60,50", "--checkpoint",
            checkpoint, "-o", str(output)]
    assert main([*args, "--tta", "mirror"]) == 2
    assert "unknown test-time augmentation 'mirror'" in capsys.readouterr().err and not output.exists()
    assert main([*args, "--tta", "flip"]) == 0 and read_image_2d(output).array.shape == (64, 80)


def test_evaluate_and_segment_take_a_zoom_and_its_scales(tmp_path, image_folders, checkpoint, capsys, last_json):
    images, masks = image_folders
    assert main(["seg", "evaluate", "--images", str(images), "--masks", str(masks), "--checkpoint", checkpoint,
                 "--zoom", "0.5"]) == 2
    assert "already sees a window around each box" in capsys.readouterr().err
    checkpoint = str(save_sam(build_sam(SAM_CONFIGS["vit_mini"]), tmp_path / "whole_image.pt"))
    assert main(["seg", "evaluate", "--images", str(images), "--masks", str(masks), "--checkpoint", checkpoint,
                 "--zoom", "0.5", "--zoom-scales", "2", "--json"]) == 0
    result = last_json()
    assert result["zoom"] == 0.5 and result["zoom_scales"] == 2 and result["n"] == 2 and 0 <= result["dsc_mean"] <= 1
    output = tmp_path / "mask.png"
    args = ["seg", "segment", "--image", str(images / "case0.png"), "--box", "20,10,60,50", "--checkpoint",
            checkpoint, "-o", str(output)]
    assert main([*args, "--zoom", "nan"]) == 2
    assert "zoom context must be a finite number >= 0" in capsys.readouterr().err and not output.exists()
    assert main([*args, "--zoom-scales", "2"]) == 2
    assert "need a zoom context" in capsys.readouterr().err and not output.exists()
    assert main([*args, "--zoom", "0.5", "--tta", "flip"]) == 0 and read_image_2d(output).array.shape == (64, 80)


def test_finetune_runs_from_a_checkpoint(tmp_path, image_folders, checkpoint, capsys, last_json):
    images, masks = image_folders
    assert main(["seg", "finetune", "--images", str(images), "--masks", str(masks), "--checkpoint", checkpoint,
                 "-o", str(tmp_path / "run"), "--rounds", "1", "--iterations", "2", "--batch-size", "2",
                 "--json"]) == 0
    assert last_json()["train_objects"] == 2
    assert (tmp_path / "run" / "model.pt").is_file()


def test_challenge_npz_case_gets_labels_in_box_order(tmp_path, checkpoint, capsys, last_json):
    from gnnseg.seg.io.challenge_npz import read_challenge_npz

    volume = np.zeros((5, 40, 50), dtype=np.uint8)
    volume[1:4, 5:20, 5:20] = 200
    volume[1:4, 25:35, 30:45] = 120
    np.savez(tmp_path / "3DBox_CT_toy.npz", imgs=volume, boxes=np.array([[5, 5, 1, 19, 19, 3], [30, 25, 1, 44, 34, 3]]),
             spacing=np.array([1.0, 1.0, 2.0]))
    output = tmp_path / "out" / "3DBox_CT_toy.npz"
    output.parent.mkdir()
    assert main(["seg", "segment", "--npz", str(tmp_path / "3DBox_CT_toy.npz"), "--checkpoint", checkpoint,
                 "-o", str(output), "--json"]) == 0
    assert last_json()["boxes"] == 2
    segs = np.load(output)["segs"]
    assert segs.shape == (5, 40, 50) and segs.dtype == np.uint16 and set(np.unique(segs)) <= {0, 1, 2}
    assert read_challenge_npz(tmp_path / "3DBox_CT_toy.npz").is_3d


def test_distill_then_export_then_segment_with_onnxruntime(tmp_path, image_folders, capsys, last_json):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[test]')")
    teacher = save_sam(build_sam(replace(SAM_CONFIGS["vit_mini"], patch_size=4, image_layout="padded")),
                       tmp_path / "teacher.pt")
    run = tmp_path / "distilled"
    assert main(["seg", "distill", "--teacher", str(teacher), "--student", "tiny_vit_mini",
                 "--images", str(image_folders[0]), "--masks", str(image_folders[1]), "-o", str(run),
                 "--distill-iterations", "3", "--rounds", "1", "--iterations", "2", "--batch-size", "2",
                 "--json"]) == 0
    result = last_json()
    assert result["objects"] == 2 and result["images"] == 2 and (run / "model.pt").is_file()
    assert (run / "teacher_embeddings.npy").is_file() and (run / "distill_log.json").is_file()
    onnx_folder = tmp_path / "onnx"
    assert main(["seg", "export-onnx", "--checkpoint", str(run / "model.pt"), "-o", str(onnx_folder), "--json"]) == 0
    assert (onnx_folder / "encoder.onnx").is_file() and (onnx_folder / "decoder.onnx").is_file()
    assert main(["seg", "export-onnx", "--checkpoint", str(run / "model.pt"), "-o", str(onnx_folder)]) == 2
    assert "not empty" in capsys.readouterr().err
    output = tmp_path / "mask.png"
    assert main(["seg", "segment", "--image", str(image_folders[0] / "case0.png"), "--box", "20,10,60,50",
                 "--checkpoint", str(onnx_folder), "-o", str(output), "--json"]) == 0
    assert read_image_2d(output).array.shape == (64, 80)


def test_box_centred_models_are_not_distilled(tmp_path, image_folders, checkpoint, capsys):
    assert main(["seg", "distill", "--teacher", checkpoint, "--student", "vit_cpu", "--images",
                 str(image_folders[0]), "--masks", str(image_folders[1]), "-o", str(tmp_path / "d")]) == 2
    assert "box-centred" in capsys.readouterr().err


def test_a_flat_vit_needs_its_normalization_named_and_nothing_is_written_before(tmp_path, image_folders, capsys,
                                                                                 last_json):
    import torch

    flat = tmp_path / "medsam_flat.pth"  # a MedSAM-like name is no longer taken as evidence
    torch.save(build_sam("vit_mini").state_dict(), flat)
    output = tmp_path / "mask.png"
    args = ["seg", "segment", "--image", str(image_folders[0] / "case0.png"), "--box", "20,10,60,50",
            "--checkpoint", str(flat), "-o", str(output)]
    assert main(args) == 2
    assert "does not say how its input is normalised" in capsys.readouterr().err and not output.exists()
    assert main([*args, "--preprocessing", "official", "--normalization", "minmax"]) == 2
    assert "Lite MedSAM's chain" in capsys.readouterr().err and not output.exists()  # a square-layout ViT
    assert main([*args, "--normalization", "minmax", "--json"]) == 0 and output.is_file()
    images, masks = image_folders
    assert main(["seg", "evaluate", "--images", str(images), "--masks", str(masks), "--checkpoint", str(flat),
                 "--normalization", "imagenet", "--json"]) == 0
    result = last_json()
    assert result["normalization"] == "imagenet" and result["model"] == str(flat)


def test_finetune_with_zoom_trains_a_whole_image_model_on_windows(tmp_path, image_folders, capsys, last_json):
    from gnnseg.seg.sam.checkpoint import load_sam

    images, masks = image_folders
    whole_image = str(save_sam(build_sam(replace(SAM_CONFIGS["vit_mini"], image_layout="padded")),
                               tmp_path / "whole.pt"))
    run = tmp_path / "run"
    assert main(["seg", "finetune", "--images", str(images), "--masks", str(masks), "--checkpoint", whole_image,
                 "--val-images", str(images), "--val-masks", str(masks), "--zoom", "0.5", "--device", "cpu",
                 "-o", str(run), "--rounds", "1", "--iterations", "2", "--batch-size", "2", "--json"]) == 0
    summary = last_json()
    assert summary["train_objects"] == 2 and summary["device"] == "cpu"
    _, meta = load_sam(run / "model.pt")
    assert meta["finetune"]["zoom"] == 0.5


def test_finetune_refuses_zoom_for_a_box_centred_model_before_any_work(tmp_path, image_folders, checkpoint, capsys):
    images, masks = image_folders
    assert main(["seg", "finetune", "--images", str(images), "--masks", str(masks), "--checkpoint", checkpoint,
                 "--zoom", "0.5", "-o", str(tmp_path / "run")]) == 2
    assert "already cuts a window around each box" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU PyTorch can use")
@pytest.mark.parametrize("command", ["finetune", "distill"])
def test_asking_for_a_gpu_on_a_machine_without_one_is_refused_before_any_work(tmp_path, image_folders, checkpoint,
                                                                             command, capsys):
    images, masks = image_folders
    model = ["--checkpoint", checkpoint] if command == "finetune" else ["--teacher", checkpoint]
    assert main(["seg", command, "--images", str(images), "--masks", str(masks), *model, "--device", "cuda",
                 "-o", str(tmp_path / "run")]) == 2
    assert "asks for a GPU" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
