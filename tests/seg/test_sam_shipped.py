"""The packaged box-prompted model: present, small, and segmenting real held-out polyps out of the box."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnnseg.seg.sam.inference.box_prompted import box_dice_scores
from gnnseg.seg.sam.modeling.sam import SAM_CONFIGS
from gnnseg.seg.sam.shipped import PACKAGED_MODELS, SHIPPED_MODEL_PATH, load_model, load_shipped_model
from tests.conftest import require_dataset


def test_the_default_is_the_click_tuned_cpu_model_small_and_in_half_precision():
    assert SHIPPED_MODEL_PATH == PACKAGED_MODELS["vit_cpu_clicks"] and SHIPPED_MODEL_PATH.stat().st_size <= 25e6
    default = torch.load(SHIPPED_MODEL_PATH, weights_only=True)
    assert {tensor.dtype for tensor in default["model"].values()} == {torch.float16}
    assert default["meta"]["base_model"] == "vit_cpu" and default["meta"]["click_tuning"]["score_every_round"]
    assert default["meta"]["more_polyps"]["extra_train_objects"] > 0
    base = torch.load(PACKAGED_MODELS["vit_cpu"], weights_only=True)
    assert set(base["meta"]["val_dice_margin5"]) == {"endoscopy", "EM", "fundus", "CT", "MR"}
    assert load_shipped_model().config == SAM_CONFIGS["vit_cpu"]


def test_packaged_model_segments_held_out_polyps():
    require_dataset("kvasir_seg_subset/images")
    from gnnseg.seg.sam.training.corpus import kvasir

    held_out = kvasir(require_dataset(""), "val")[:10]
    scores = box_dice_scores(load_shipped_model(), held_out, margin=5)
    assert np.mean(scores) > 0.85, scores


@pytest.mark.parametrize("name", ["lite_medsam", "lite_medsam_fast"])
def test_packaged_lite_models_are_distilled_tiny_vits_in_half_precision(name):
    payload = torch.load(PACKAGED_MODELS[name], weights_only=True)
    assert {tensor.dtype for tensor in payload["model"].values()} == {torch.float16}
    assert payload["meta"]["distill"]["mse_last_50"] < payload["meta"]["distill"]["mse_first_50"] / 10
    assert load_shipped_model(name).config == SAM_CONFIGS[name]
    assert load_model(name).config.encoder == "tiny_vit"


@pytest.mark.parametrize("name", ["lite_medsam", "lite_medsam_fast"])
def test_packaged_lite_models_segment_held_out_polyps(name):
    require_dataset("kvasir_seg_subset/images")
    from gnnseg.seg.sam.training.corpus import kvasir

    held_out = kvasir(require_dataset(""), "val")[:6]
    scores = box_dice_scores(load_shipped_model(name), held_out, margin=5)
    assert np.mean(scores) > 0.85, scores


def test_clicks_improve_the_defaults_held_out_polyps():
    tuned = load_shipped_model("vit_cpu_clicks")
    assert tuned.config == load_shipped_model("vit_cpu").config
    require_dataset("kvasir_seg_subset/images")
    from gnnseg.seg.sam.inference.chain import make_predictor
    from gnnseg.seg.sam.inference.simulated_user import objects_summary
    from gnnseg.seg.sam.training.corpus import kvasir

    summary = objects_summary(make_predictor(tuned), kvasir(require_dataset(""), "val")[:8], margin=5, clicks=3)
    box_only, after = summary["dsc_per_step"][0], summary["dsc_per_step"][-1]
    assert after > box_only + 0.01, (box_only, after)


def test_unknown_packaged_model_is_named():
    with pytest.raises(ValueError, match="choose one of"):
        load_shipped_model("medsam_vit_h")
