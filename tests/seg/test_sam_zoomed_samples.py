"""Training samples cut to the windows that zoom answers their boxes on (``seg finetune --zoom``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gnnseg.seg.metrics import dice
from gnnseg.seg.sam.inference.box_prompted import box_dice_scores, box_prompted_masks
from gnnseg.seg.sam.modeling.sam import SAM_CONFIGS, build_sam
from gnnseg.seg.sam.training.samples import PromptSample, zoomed_samples


def _sample(height: int, width: int, rows: slice, columns: slice, seed: int = 0) -> PromptSample:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), bool)
    mask[rows, columns] = True
    return PromptSample(image, mask, "toy")


def test_a_small_object_in_a_large_image_becomes_its_window_at_the_image_resolution():
    sample = _sample(300, 400, slice(100, 120), slice(250, 270))
    zoomed, = zoomed_samples([sample], 0.5, 256)
    assert zoomed.image.shape == (256, 256, 3) and zoomed.mask.shape == (256, 256)
    assert zoomed.mask.sum() == sample.mask.sum()            # the whole object, never resized
    top, left = (int(v) for v in zoomed.source.split("[")[1].rstrip("]").replace(":", ",").split(",")[::2])
    np.testing.assert_array_equal(zoomed.image, sample.image[top:top + 256, left:left + 256])
    np.testing.assert_array_equal(zoomed.mask, sample.mask[top:top + 256, left:left + 256])
    assert zoomed.source.startswith("toy/zoom[")


def test_an_image_no_larger_than_the_window_keeps_its_shared_image():
    small = _sample(100, 120, slice(10, 40), slice(20, 60))
    other = PromptSample(small.image, np.roll(small.mask, 50, axis=1), "toy")
    zoomed = zoomed_samples([small, other], 0.5, 256)
    assert zoomed[0] is small and zoomed[1] is other and zoomed[0].image is zoomed[1].image


def test_a_large_object_gets_a_window_of_twice_its_box():
    sample = _sample(600, 600, slice(200, 400), slice(250, 350))
    zoomed, = zoomed_samples([sample], 0.5, 256)
    side = 2 * (200 + 2 * 5)                                 # the box grown by the 5-pixel prompt margin, doubled
    assert zoomed.image.shape[:2] == (side, side) and zoomed.mask.sum() == sample.mask.sum()


def test_scoring_zoomed_samples_whole_equals_scoring_the_samples_with_zoom():
    model = build_sam(replace(SAM_CONFIGS["vit_mini"], image_layout="padded"))
    samples = [_sample(150, 200, slice(60, 80), slice(120, 145), seed=1),
               _sample(150, 200, slice(10, 50), slice(20, 40), seed=2)]
    masks = box_prompted_masks(model, samples, 5, zoom=0.5)
    assert all(mask.any() for mask in masks)                 # an untrained model, but an answer to compare
    with_zoom = [dice(mask, sample.mask) for mask, sample in zip(masks, samples)]
    np.testing.assert_allclose(box_dice_scores(model, zoomed_samples(samples, 0.5, model.config.image_size)),
                               with_zoom, atol=1e-12)


def test_a_bad_context_is_refused():
    with pytest.raises(ValueError, match="zoom context must be a finite number"):
        zoomed_samples([_sample(50, 50, slice(5, 20), slice(5, 20))], -1, 256)
