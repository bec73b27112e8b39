"""SAM checkpoints: every layout loads, conversions round-trip, and a bad file names what is wrong."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch

from gnnseg.core.checkpoint import CheckpointError
from gnnseg.seg.sam.checkpoint import (
    convert_training_checkpoint,
    export_official,
    load_mask_decoder,
    load_sam,
    save_mask_decoder,
    save_sam,
)
from gnnseg.seg.sam.modeling.sam import SAM_CONFIGS, build_sam


@pytest.fixture
def model():
    torch.manual_seed(0)
    sam = build_sam("vit_mini")
    with torch.no_grad():
        for parameter in sam.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return sam


def same_weights(a, b, atol=0.0):
    return all(torch.allclose(x, y, atol=atol) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_gnnseg_checkpoint_rebuilds_itself(tmp_path, model):
    path = save_sam(model, tmp_path / "model.pt", meta={"trained_on": "test"})
    loaded, meta = load_sam(path)
    assert loaded.config == SAM_CONFIGS["vit_mini"]
    assert meta == {"trained_on": "test"}
    assert same_weights(model, loaded)


def test_half_precision_checkpoint_is_half_the_size_and_close(tmp_path, model):
    full = save_sam(model, tmp_path / "full.pt")
    half = save_sam(model, tmp_path / "half.pt", half_precision=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, _ = load_sam(half)
    assert next(loaded.parameters()).dtype == torch.float32
    assert same_weights(model, loaded, atol=1e-3)


def test_ddp_training_checkpoint_converts_to_the_official_layout(tmp_path, model):
    wrapped = {"model": {f"module.{k}": v for k, v in model.state_dict().items()}, "optimizer": {}, "epoch": 3}
    torch.save(wrapped, tmp_path / "medsam_model_latest.pth")
    flat = convert_training_checkpoint(tmp_path / "medsam_model_latest.pth", tmp_path / "medsam_flat.pth")
    state = torch.load(flat, weights_only=True)
    assert set(state) == set(model.state_dict())
    with pytest.raises(CheckpointError, match="a ViT checkpoint does not say how its input is normalised"):
        load_sam(flat)  # SAM and MedSAM have the same tensors: the file name is no evidence
    loaded, meta = load_sam(flat, normalization="minmax")
    assert meta["source_layout"] == "official"
    assert loaded.config.normalization == "minmax"
    assert same_weights(model, loaded)
    direct, meta = load_sam(tmp_path / "medsam_model_latest.pth", normalization="minmax")
    assert meta["source_layout"] == "training" and same_weights(model, direct)


def test_missing_and_mismatched_keys_are_named(tmp_path, model):
    state = dict(model.state_dict())
    del state["mask_decoder.iou_token.weight"]
    state["mask_decoder.mask_tokens.weight"] = torch.zeros(5, 7)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError) as error:
        load_sam(tmp_path / "broken.pth", normalization="minmax")
    message = str(error.value)
    assert "missing: mask_decoder.iou_token.weight" in message
    assert "mask_decoder.mask_tokens.weight: checkpoint (5, 7) vs model (4, 32)" in message


def test_unexpected_keys_are_refused(tmp_path, model):
    state = dict(model.state_dict())
    state["image_encoder.extra_head.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match="unexpected: image_encoder.extra_head.weight"):
        load_sam(tmp_path / "extra.pth", normalization="minmax")


def test_not_a_sam_and_corrupt_files(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a SAM state dict"):
        load_sam(tmp_path / "other.pth")
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_sam(tmp_path / "corrupt.pth")


@pytest.mark.parametrize(("name", "lost"), [
    ("vit_mini", "decoder_heads: 2 -> 8"),  # head counts leave no trace in the decoder's weights
    ("vit_cpu", "crop_margin: 0.25 -> None"),  # the box-centred window is not a tensor
    ("lite_medsam_fast", "merge_strides: [1, 1, 1] -> [2, 2, 1]"),  # its stem's shapes are MobileSAM's
])
def test_a_model_the_flat_layout_cannot_describe_is_not_exported(tmp_path, name, lost):
    with pytest.raises(CheckpointError, match=re.escape(lost)):
        export_official(build_sam(name), tmp_path / "flat.pth")
    assert not (tmp_path / "flat.pth").exists()


def test_lite_medsam_exports_to_the_flat_layout_and_reloads_as_itself(tmp_path):
    path = export_official(build_sam("lite_medsam"), tmp_path / "lite_medsam_flat.pth")
    loaded, _ = load_sam(path)
    assert loaded.config == SAM_CONFIGS["lite_medsam"]


def test_a_tuned_mask_decoder_travels_alone_and_only_onto_its_base(tmp_path, model):
    base = "0" * 64
    path = save_mask_decoder(model, tmp_path / "decoder.pt", base="released", base_sha256=base, meta={"steps": 3})
    stored = torch.load(path, weights_only=True)["model"]
    assert set(stored) == set(model.mask_decoder.state_dict()) and {t.dtype for t in stored.values()} == {torch.float16}
    other = build_sam("vit_mini")
    encoder_before = {k: v.clone() for k, v in other.image_encoder.state_dict().items()}
    assert load_mask_decoder(other, path, base_sha256=base) == {"steps": 3}
    for key, value in model.mask_decoder.state_dict().items():
        torch.testing.assert_close(other.mask_decoder.state_dict()[key], value, atol=1e-2, rtol=1e-2)
    assert all(torch.equal(v, other.image_encoder.state_dict()[k]) for k, v in encoder_before.items())
    with pytest.raises(CheckpointError, match="was tuned over other weights"):
        load_mask_decoder(other, path, base_sha256="1" * 64)
    with pytest.raises(CheckpointError, match="not a gnnseg mask decoder"):
        load_mask_decoder(other, save_sam(model, tmp_path / "whole.pt"), base_sha256=base)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        narrower = build_sam(replace(SAM_CONFIGS["vit_mini"], decoder_mlp_dim=32))
        load_mask_decoder(narrower, path, base_sha256=base)
