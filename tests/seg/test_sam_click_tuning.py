"""Click tuning: the simulated user's clicks on batches, the loop's loss, and a few steps that change only the prompt
encoder and mask decoder."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from gnnseg.seg.sam.modeling.sam import SAM_CONFIGS, build_sam
from gnnseg.seg.sam.training.click_loop import loop_losses, simulated_clicks
from gnnseg.seg.sam.training.click_tuning import ClickTuningConfig, cache_windows, click_tune
from gnnseg.seg.sam.training.samples import samples_from_image


def objects(seed: int, count: int = 2):
    rng = np.random.default_rng(seed)
    found = []
    for k in range(count):
        image = rng.integers(0, 255, (48, 56, 3), dtype=np.uint8)
        mask = np.zeros((48, 56), dtype=np.uint8)
        mask[10 + k : 30 + k, 12:40] = 1
        found += samples_from_image(image, mask, source=f"case{seed}_{k}")
    return found


def test_the_simulated_clicks_of_a_batch_follow_each_window_and_pad_the_right_ones():
    masks = torch.zeros(2, 16, 16)
    masks[:, 4:12, 4:12] = 1
    low_res = torch.full((2, 1, 16, 16), -10.0)
    low_res[1, 0] = 10.0 * (masks[1] * 2 - 1)                                   # the second answer is right
    points, labels = simulated_clicks(low_res, masks)
    assert labels[0, 0] == 1 and 6 <= points[0, 0, 0] <= 9 and 6 <= points[0, 0, 1] <= 9   # all missed: centre
    assert labels[1, 0] == -1                                                              # nothing to correct


def test_tuning_moves_the_decoder_and_prompt_encoder_only():
    model = build_sam(replace(SAM_CONFIGS["vit_mini"], crop_margin=0.25))
    config = ClickTuningConfig(steps=3, batch_size=4, clicks=2, boxes_per_object=2)
    cache = cache_windows(model, {"a": objects(0), "b": objects(1)}, config)
    assert cache.embeddings.shape[0] == cache.boxes.shape[0] == cache.masks.shape[0] == 8
    assert sorted(set(cache.groups.tolist())) == [0, 1] and not cache.embeddings.requires_grad
    encoder_before = [p.detach().clone() for p in model.image_encoder.parameters()]
    decoder_before = [p.detach().clone() for p in model.mask_decoder.parameters()]
    box_only, = loop_losses(model, cache.embeddings[:2], cache.boxes[:2], cache.masks[:2], 1, graded="last")
    after_clicks, = loop_losses(model, cache.embeddings[:2], cache.boxes[:2], cache.masks[:2], 3, graded="last")
    assert box_only.requires_grad and after_clicks.requires_grad and float(box_only) != float(after_clicks)
    log = click_tune(model, cache, config)
    assert len(log["loss"]) == 3 and all(np.isfinite(log["loss"]))
    assert all(torch.equal(a, b) for a, b in zip(encoder_before, model.image_encoder.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(decoder_before, model.mask_decoder.parameters()))


def test_every_round_is_scored_or_only_the_last_and_the_loop_is_the_same_either_way():
    model = build_sam(replace(SAM_CONFIGS["vit_mini"], crop_margin=0.25)).eval()
    cache = cache_windows(model, {"a": objects(0), "b": objects(1)}, ClickTuningConfig(boxes_per_object=1))
    batch = cache.embeddings, cache.boxes, cache.masks
    every = loop_losses(model, *batch, 4)
    last, = loop_losses(model, *batch, 4, graded="last")
    assert len(every) == 4 and all(loss.requires_grad for loss in every)
    assert float(last) == pytest.approx(float(every[-1]), rel=1e-6)       # the same clicks, the same last answer
    with pytest.raises(ValueError, match="at least one round"):
        loop_losses(model, *batch, 0)


def test_scoring_every_round_logs_each_rounds_loss():
    model = build_sam(replace(SAM_CONFIGS["vit_mini"], crop_margin=0.25))
    config = ClickTuningConfig(steps=2, batch_size=4, clicks=2, boxes_per_object=1, score_every_round=True)
    log = click_tune(model, cache_windows(model, {"a": objects(0)}, config), config)
    assert [sorted(step) for step in log["round_losses"]] == [[0, 1, 2], [0, 1, 2]]
    assert log["loss"][0] == pytest.approx(np.mean(list(log["round_losses"][0].values())), rel=1e-5)


def test_whole_image_models_are_refused():
    with pytest.raises(ValueError, match="box-centred"):
        cache_windows(build_sam("vit_mini"), {"a": objects(0)}, ClickTuningConfig())
