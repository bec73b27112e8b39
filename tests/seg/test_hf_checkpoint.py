"""Hugging Face SAM checkpoints: a random ``transformers.SamModel`` imported into gnnseg computes the same embeddings,
masks and IoU estimates; gnnseg's exports load back into ``SamModel.from_pretrained``; bad folders are refused.

``transformers`` is the oracle (the test extra). It imports torchvision where that is installed, whose compiled
operators do not load beside the CPU torch; torchvision only needs the schemas of ``nms`` and ``qnms`` to exist to
import, so they are declared (never called) first, as for timm (:mod:`tests.seg.timm_tiny_vit`).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from gnnseg.cli import main
from gnnseg.core.checkpoint import CheckpointError
from gnnseg.seg.sam.checkpoint import load_sam, save_sam
from gnnseg.seg.sam.hf_checkpoint import (
    IMAGE_POSITIONAL_KEY,
    PROMPT_POSITIONAL_KEY,
    export_hf,
    gnnseg_to_hf_keys,
    hf_to_gnnseg_keys,
    load_hf_folder,
    sam_from_transformers,
)
from gnnseg.seg.sam.hf_layout import is_hugging_face_folder
from gnnseg.seg.sam.modeling.sam import SAM_CONFIGS, Sam, build_sam
from gnnseg.seg.sam.shipped import load_model, load_shipped_model
from tests.conftest import require_dataset
from tests.seg.torchvision_schemas import make_torchvision_importable


def transformers_sam():
    """``transformers``' SAM classes, or skip when the test extra is not installed."""
    make_torchvision_importable()  # transformers works without torchvision too
    try:
        from transformers import SamConfig, SamImageProcessor, SamModel
    except ImportError:
        pytest.skip("transformers is not installed (pip install -e '.[test]')")
    return SamConfig, SamModel, SamImageProcessor


IMAGE, PATCH = 128, 8


def small_hf_config(decoder_norm_eps: float = 1e-6):
    """A SAM small enough for seconds: 16 x 16 tokens in windows of 5 (so windows are padded) and one global block.

    ``decoder_norm_eps``: the two-way transformer's LayerNorm eps, transformers' default 1e-6 (the original SAM's,
    and gnnseg's default, is 1e-5)."""
    SamConfig, _, _ = transformers_sam()
    return SamConfig(
        vision_config={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": IMAGE,
                       "patch_size": PATCH, "window_size": 5, "global_attn_indexes": [1], "output_channels": 32,
                       "num_pos_feats": 16},
        prompt_encoder_config={"hidden_size": 32, "image_size": IMAGE, "patch_size": PATCH},
        mask_decoder_config={"hidden_size": 32, "mlp_dim": 64, "num_attention_heads": 2, "iou_head_hidden_dim": 32,
                             "layer_norm_eps": decoder_norm_eps})


def randomized(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter drawn at random (norm weights around 1), so that a wrongly mapped tensor shows; the Fourier
    matrix at SAM's scale 1. Position tables are zero when built, and would hide a mistake."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if "positional" in name:
                parameter.copy_(noise)
            else:
                centre = 1.0 if "norm" in name and name.endswith("weight") else 0.0
                parameter.copy_(centre + 0.2 * noise)
        for name, buffer in module.named_buffers():
            if "positional_encoding_gaussian_matrix" in name:
                buffer.copy_(torch.randn(buffer.shape, generator=generator))
    return module.eval()


@pytest.fixture(scope="module")
def hf_model():
    _, SamModel, _ = transformers_sam()
    return randomized(SamModel(small_hf_config()), seed=1)


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(1, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(2))


BOXES = torch.tensor([[10.0, 20.0, 70.0, 90.0], [30.0, 5.0, 120.0, 60.0]])
POINTS = torch.tensor([[[40.0, 50.0], [80.0, 90.0]], [[10.0, 100.0], [60.5, 60.0]]])
LABELS = torch.tensor([[1, 0], [1, 1]])


def largest_differences(hf, sam, pixels) -> dict[str, float]:
    """Max |HF - gnnseg| of the image embeddings and of the masks and IoU estimates for boxes, points (padded),
    points with boxes, and a box with a mask prompt; HF's inputs as its processor leaves them (normalised, padded
    pixels; prompts in the resized input frame), the top-left corner of ``pixels`` for a smaller model."""
    differences = {}
    size, grid = sam.config.image_size, sam.config.embedding_size
    boxes, points = BOXES * size / IMAGE, POINTS * size / IMAGE  # the prompts drawn for 128 x 128, scaled
    with torch.no_grad():
        theirs_embedding = hf.get_image_embeddings(pixels[..., :size, :size])
        ours_embedding = sam.encode(pixels[..., :size, :size])
        differences["embeddings"] = (theirs_embedding - ours_embedding).abs().max().item()
        mask_prompt = torch.randn(1, 1, 4 * grid, 4 * grid, generator=torch.Generator().manual_seed(3))
        cases = {
            "boxes": ({"input_boxes": boxes[None]}, {"boxes": boxes}, True),
            "points": ({"input_points": points[None], "input_labels": LABELS[None]},
                       {"points": (points, LABELS)}, False),
            "points and boxes": ({"input_points": points[None], "input_labels": LABELS[None],
                                  "input_boxes": boxes[None]}, {"points": (points, LABELS), "boxes": boxes}, True),
            "mask prompt": ({"input_boxes": boxes[None, :1], "input_masks": mask_prompt},
                            {"boxes": boxes[:1], "mask_inputs": mask_prompt}, True),
        }
        for name, (their_prompts, our_prompts, multimask) in cases.items():
            theirs = hf(image_embeddings=theirs_embedding, multimask_output=multimask, **their_prompts)
            masks, iou = sam.decode(ours_embedding, multimask=multimask, **our_prompts)
            assert masks.shape == theirs.pred_masks[0].shape
            differences[f"{name} masks"] = (theirs.pred_masks[0] - masks).abs().max().item()
            differences[f"{name} iou"] = (theirs.iou_scores[0] - iou).abs().max().item()
    return differences


def assert_same_outputs(hf, sam, pixels, tolerance: float = 1e-4) -> None:
    differences = largest_differences(hf, sam, pixels)
    assert max(differences.values()) <= tolerance, differences


def test_key_mapping_renames_every_tensor_and_back(hf_model):
    sam = sam_from_transformers(hf_model)
    theirs = hf_model.state_dict()
    ours = sam.state_dict()
    assert set(hf_to_gnnseg_keys(theirs)) == set(ours)
    assert set(gnnseg_to_hf_keys(ours)) == set(theirs) - {PROMPT_POSITIONAL_KEY}
    assert set(hf_to_gnnseg_keys(gnnseg_to_hf_keys(ours))) == set(ours)
    assert hf_to_gnnseg_keys(theirs)["mask_decoder.iou_prediction_head.layers.2.weight"] is \
        theirs["mask_decoder.iou_prediction_head.proj_out.weight"]
    assert torch.equal(ours["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"],
                       theirs[IMAGE_POSITIONAL_KEY])


def test_imported_model_gives_transformers_embeddings_masks_and_iou(hf_model, pixels):
    sam = sam_from_transformers(hf_model)
    assert (sam.config.encoder_dim, sam.config.window_size, sam.config.global_attention) == (64, 5, (1,))
    assert sam.config.normalization == "imagenet" and sam.config.layout == "padded"
    differences = largest_differences(hf_model, sam, pixels)
    assert differences["embeddings"] <= 1e-4
    assert max(differences.values()) <= 1e-4, differences


def test_the_decoder_norm_eps_travels_with_the_model(hf_model, pixels):
    """HF's default two-way transformer LayerNorm eps is 1e-6, the original SAM's 1e-5: each model keeps its own."""
    assert sam_from_transformers(hf_model).config.decoder_norm_eps == 1e-6
    _, SamModel, _ = transformers_sam()
    hf = randomized(SamModel(small_hf_config(decoder_norm_eps=1e-5)), seed=1)
    sam = sam_from_transformers(hf)
    assert sam.config.decoder_norm_eps == 1e-5
    differences = largest_differences(hf, sam, pixels)
    assert max(differences.values()) <= 1e-4, differences


def test_saved_folder_loads_through_load_sam_with_imagenet_normalisation(tmp_path, hf_model, pixels):
    _, _, SamImageProcessor = transformers_sam()
    folder = tmp_path / "sam-hf"
    hf_model.save_pretrained(folder)
    assert is_hugging_face_folder(folder)
    onnx_export = tmp_path / "onnx"  # gnnseg's ONNX export folder also has a config.json: gnnseg's own SamConfig
    onnx_export.mkdir()
    (onnx_export / "config.json").write_text(json.dumps(SAM_CONFIGS["vit_mini"].to_dict()))
    assert not is_hugging_face_folder(onnx_export) and not is_hugging_face_folder(folder / "config.json")
    with pytest.raises(CheckpointError, match="is not a Hugging Face model folder"):
        load_sam(onnx_export)
    sam, meta = load_sam(folder)
    assert meta["source_layout"] == "huggingface"
    assert meta["normalization_source"].startswith("SamImageProcessor defaults")
    assert sam.config.normalization == "imagenet"
    assert_same_outputs(hf_model, sam, pixels)

    SamImageProcessor().save_pretrained(folder)
    _, meta = load_sam(folder)
    assert meta["normalization_source"] == "preprocessor_config.json"
    model = load_model(folder)                  # what every seg command's --checkpoint DIR does
    assert isinstance(model, Sam) and model.config.normalization == "imagenet"


def test_a_processor_with_other_statistics_needs_a_normalization(tmp_path, hf_model):
    _, _, SamImageProcessor = transformers_sam()
    folder = tmp_path / "sam-hf"
    hf_model.save_pretrained(folder)
    SamImageProcessor(image_mean=[0.5, 0.5, 0.5]).save_pretrained(folder)
    with pytest.raises(CheckpointError, match=r"image_mean is \[0.5, 0.5, 0.5\].*--normalization"):
        load_hf_folder(folder)
    sam, meta = load_hf_folder(folder, normalization="minmax")
    assert (sam.config.normalization, sam.config.layout, meta["normalization_source"]) == ("minmax", "square",
                                                                                            "given")


def test_gnnseg_model_exports_to_transformers_and_back(tmp_path, pixels):
    _, SamModel, _ = transformers_sam()
    torch.manual_seed(0)
    ours = randomized(build_sam(SAM_CONFIGS["vit_mini"]), seed=4)  # min-max, 64 x 64 input, 2 decoder heads
    folder = export_hf(ours, tmp_path / "exported")
    assert sorted(path.name for path in folder.iterdir()) == ["config.json", "model.safetensors"]
    theirs, info = SamModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert_same_outputs(theirs.eval(), ours, pixels)

    again, meta = load_sam(folder)
    assert again.config == ours.config  # the min-max input chain comes back from config.json's gnnseg_input
    assert meta["normalization_source"] == "config.json gnnseg_input"
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ours.state_dict().values(),
                                                 strict=True))


def test_imported_model_modified_in_gnnseg_exports_with_a_processor(tmp_path, hf_model, pixels):
    _, SamModel, SamImageProcessor = transformers_sam()
    sam = sam_from_transformers(hf_model)
    with torch.no_grad():  # stands for a fine-tuning step on the mask decoder
        for parameter in sam.mask_decoder.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(5)))
    folder = export_hf(sam, tmp_path / "tuned")
    theirs, info = SamModel.from_pretrained(folder, output_loading_info=True)
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert theirs.config.mask_decoder_config.layer_norm_eps == 1e-6      # the imported model's own
    assert_same_outputs(theirs.eval(), sam, pixels)
    assert not torch.allclose(theirs.mask_decoder.iou_token.weight, hf_model.mask_decoder.iou_token.weight)
    processor = SamImageProcessor.from_pretrained(folder)  # an ImageNet, padded model: HF's processor fits it
    assert list(processor.image_mean) == [0.485, 0.456, 0.406] and processor.size["longest_edge"] == IMAGE


def test_export_hf_command_writes_once_and_refuses_tiny_vit(tmp_path, capsys, last_json):
    transformers_sam()
    checkpoint = save_sam(randomized(build_sam("vit_mini"), seed=6), tmp_path / "model.pt")
    output = tmp_path / "hf"
    assert main(["seg", "export-hf", "--checkpoint", str(checkpoint), "--out", str(output), "--json"]) == 0
    assert last_json()["files"] == ["config.json", "model.safetensors"]
    written = (output / "model.safetensors").read_bytes()
    assert main(["seg", "export-hf", "--checkpoint", str(checkpoint), "--out", str(output)]) == 2
    assert "is not an empty folder" in capsys.readouterr().err
    assert (output / "model.safetensors").read_bytes() == written

    tiny = save_sam(build_sam("tiny_vit_mini"), tmp_path / "tiny.pt")
    assert main(["seg", "export-hf", "--checkpoint", str(tiny), "--out", str(tmp_path / "tiny-hf")]) == 2
    assert "no transformers SamModel layout" in capsys.readouterr().err
    assert not (tmp_path / "tiny-hf").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["hf", "model.pt", "tiny.pt"]  # no temporary left


def test_trained_model_round_trip_with_either_decoder_norm_eps(tmp_path):
    """gnnseg's trained vit_cpu_clicks through transformers on MedSAM's demo CT slice, 64 boxes: the export computes
    what gnnseg does, and so does the same folder with HF's usual decoder eps 1e-6 once read back."""
    _, SamModel, _ = transformers_sam()
    from gnnseg.seg.io import read_image_2d

    image = read_image_2d(require_dataset("medsam_assets/img_demo.png")).array
    sam = load_shipped_model("vit_cpu_clicks")
    size = sam.config.image_size
    pixels = torch.from_numpy(image).float()
    pixels = pixels.expand(3, -1, -1) if pixels.ndim == 2 else pixels.permute(2, 0, 1)
    pixels = sam.normalize(torch.nn.functional.interpolate(pixels[None], size=(size, size), mode="area"))
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(64, 2, generator=generator) * size * 0.6
    boxes = torch.cat([corners, (corners + 10 + torch.rand(64, 2, generator=generator) * size * 0.4)
                       .clamp(max=size - 1)], dim=1)
    folder = export_hf(sam, tmp_path / "vit_cpu_clicks")
    hf_eps = tmp_path / "hf_eps"
    hf_eps.mkdir()
    shutil.copy(folder / "model.safetensors", hf_eps / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    config["mask_decoder_config"]["layer_norm_eps"] = 1e-6
    (hf_eps / "config.json").write_text(json.dumps(config))
    with torch.no_grad():
        embedding = sam.encode(pixels)
        ours, _ = sam.decode(embedding, boxes=boxes)
        exported = SamModel.from_pretrained(folder).eval()
        assert (exported.get_image_embeddings(pixels) - embedding).abs().max() <= 1e-4
        same = exported(image_embeddings=embedding, input_boxes=boxes[None], multimask_output=False).pred_masks[0]
        usual = SamModel.from_pretrained(hf_eps).eval()(image_embeddings=embedding, input_boxes=boxes[None],
                                                       multimask_output=False).pred_masks[0]
        reread, _ = load_sam(hf_eps)
        ours_usual, _ = reread.decode(embedding, boxes=boxes)
    assert (same - ours).abs().max() <= 1e-4
    # float32 rounding on logits up to ~35: 2e-4 is 6e-6 of their range
    assert reread.config.decoder_norm_eps == 1e-6 and (usual - ours_usual).abs().max() <= 2e-4
    # the eps moves the logits by more than that tolerance (3.7e-4 measured), so an eps that did not travel with the
    # folder would fail the check above
    assert (usual - ours).abs().max() > 2e-4


@pytest.fixture
def saved_folder(tmp_path, hf_model):
    folder = tmp_path / "sam-hf"
    hf_model.save_pretrained(folder)
    return folder


def rewrite_config(folder, change) -> None:
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


def test_another_architecture_is_refused_in_one_message(saved_folder, hf_model):
    rewrite_config(saved_folder, lambda c: c.update(model_type="sam_hq", architectures=["SamHQModel"]))
    with pytest.raises(CheckpointError, match=r"model_type 'sam_hq' with architectures \['SamHQModel'\]: gnnseg "
                                              r"reads transformers' SamModel only"):
        load_sam(saved_folder)
    with pytest.raises(CheckpointError, match="a SamVisionEncoder is not transformers' SamModel"):
        sam_from_transformers(hf_model.vision_encoder)


@pytest.mark.parametrize(("section", "key", "value"), [
    ("vision_config", "hidden_act", "gelu_new"),
    ("vision_config", "use_rel_pos", False),
    ("mask_decoder_config", "num_multimask_outputs", 4),
    ("prompt_encoder_config", "hidden_size", 48),
])
def test_a_config_value_gnnseg_cannot_build_is_named(saved_folder, section, key, value):
    rewrite_config(saved_folder, lambda c: c[section].update({key: value}))
    with pytest.raises(CheckpointError, match=rf"{section}\.{key} is {value!r} where gnnseg's SAM has"):
        load_sam(saved_folder)


def test_missing_safetensors_and_pickled_weights_are_refused(saved_folder, hf_model):
    (saved_folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        load_sam(saved_folder)
    torch.save(hf_model.state_dict(), saved_folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="reads Hugging Face weights from safetensors only"):
        load_sam(saved_folder)
    assert sorted(path.name for path in saved_folder.iterdir()) == ["config.json", "pytorch_model.bin"]


def test_corrupt_weights_and_a_shape_mismatch_are_named(saved_folder):
    rewrite_config(saved_folder, lambda c: c["vision_config"].update(hidden_size=96, mlp_dim=None))
    with pytest.raises(CheckpointError, match=r"do not fit config.json.*shape mismatch: "
                                              r"image_encoder\.blocks\.0\.attn\.proj\.bias: checkpoint \(64,\) vs "
                                              r"model \(96,\)"):
        load_sam(saved_folder)
    (saved_folder / "model.safetensors").write_bytes(b"not tensors")
    with pytest.raises(CheckpointError, match="not a safetensors file, or a corrupt one"):
        load_sam(saved_folder)


def test_untied_fourier_matrices_are_refused(hf_model):
    state = dict(hf_model.state_dict())
    state[PROMPT_POSITIONAL_KEY] = state[IMAGE_POSITIONAL_KEY] + 1
    with pytest.raises(CheckpointError, match="one random Fourier matrix"):
        hf_to_gnnseg_keys(state)


def test_export_refuses_tiny_vit_and_a_non_empty_folder_without_writing(tmp_path):
    with pytest.raises(CheckpointError, match="'tiny_vit' image encoder .* has no transformers SamModel layout"):
        export_hf(build_sam("tiny_vit_mini"), tmp_path / "tiny")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="is not an empty folder"):
        export_hf(build_sam("vit_mini"), occupied)
    assert [path.name for path in occupied.iterdir()] == ["notes.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["occupied"]
