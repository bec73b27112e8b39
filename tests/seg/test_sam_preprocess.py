"""MedSAM / Lite MedSAM preprocessing: hand-computed intensities, resizing, normalization and box arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.transform import resize

from gnnseg.seg.io.intensity import (
    CT_WINDOWS,
    IMAGENET_PIXEL_MEAN,
    IMAGENET_PIXEL_STD,
    clip_percentiles,
    scale_volume,
    to_rgb_uint8,
    to_uint8,
    window_ct,
)
from gnnseg.seg.sam.inference.model_input import (
    lite_model_input,
    medsam_model_input,
    minmax_normalize,
    normalize_for_model,
    pad_to_square,
    resize_image,
    resize_longest_side,
    resize_mask,
)
from gnnseg.seg.sam.inference.prompts import boxes_from_mask, scale_boxes, scale_boxes_longest_side, validate_boxes

# ----------------------------------------------------------------------------------------------------
# Intensities
# ----------------------------------------------------------------------------------------------------


def test_ct_window_presets():
    assert CT_WINDOWS == {"soft_tissue": (400.0, 40.0), "lung": (1500.0, -160.0), "brain": (80.0, 40.0),
                          "bone": (1800.0, 400.0)}


def test_window_ct_soft_tissue_by_hand():
    hu = np.array([-1000, 40, 240, 1000], dtype=np.int16)        # window [-160, 240]
    out = window_ct(hu, "soft_tissue")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 127.5, 255.0, 255.0])
    np.testing.assert_allclose(window_ct(hu), out)                # soft tissue is the default


def test_window_ct_custom_pair_and_other_presets():
    np.testing.assert_allclose(window_ct(np.array([-60.0, -50.0, 0.0, 25.0]), (100, 0)), [0.0, 0.0, 127.5, 191.25])
    np.testing.assert_allclose(window_ct(np.array([0.0, 20.0, 80.0]), "brain"), [0.0, 63.75, 255.0])
    np.testing.assert_allclose(window_ct(np.array([-910.0, -160.0, 590.0]), "lung"), [0.0, 127.5, 255.0])


def test_window_ct_errors():
    with pytest.raises(ValueError, match=r"unknown CT window 'liver'.*bone.*brain.*lung.*soft_tissue"):
        window_ct(np.zeros(3), "liver")
    with pytest.raises(ValueError, match="window width must be positive, got 0.0"):
        window_ct(np.zeros(3), (0, 40))
    with pytest.raises(ValueError, match="finite \\(width, level\\) pair"):
        window_ct(np.zeros(3), (400, 40, 1))
    with pytest.raises(ValueError, match=r"hu contains NaN \(first at index \(1,\)\)"):
        window_ct(np.array([0.0, np.nan]))


def test_clip_percentiles_nonzero_only_matches_numpy():
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 100.0, size=(20, 30))
    image[:5] = 0                                                 # background, as in MR
    lower, upper = np.percentile(image[image > 0], [0.5, 99.5])
    expected = (np.clip(image, lower, upper) - lower) / (upper - lower) * 255
    expected[image == 0] = 0
    out = clip_percentiles(image)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)
    assert np.all(out[:5] == 0) and out.max() == pytest.approx(255) and out[5:].min() == pytest.approx(0, abs=1e-4)


def test_clip_percentiles_over_all_voxels():
    rng = np.random.default_rng(1)
    image = rng.normal(0, 1, size=(40, 40))
    image[0, 0] = 50.0                                            # an outlier the percentiles cut off
    lower, upper = np.percentile(image, [2, 98])
    out = clip_percentiles(image, 2, 98, nonzero_only=False)
    np.testing.assert_allclose(out, (np.clip(image, lower, upper) - lower) / (upper - lower) * 255, rtol=1e-5,
                               atol=1e-4)
    assert out[0, 0] == pytest.approx(255)


def test_clip_percentiles_constant_and_empty_foreground_give_zeros():
    for image, nonzero_only in ((np.full((4, 4), 7.0), True), (np.full((4, 4), 7.0), False), (np.zeros((3, 3)), True)):
        out = clip_percentiles(image, nonzero_only=nonzero_only)
        assert not np.isnan(out).any() and np.all(out == 0)


def test_clip_percentiles_errors():
    with pytest.raises(ValueError, match="0 <= low < high <= 100, got low=99.5, high=0.5"):
        clip_percentiles(np.ones(4), 99.5, 0.5)
    with pytest.raises(ValueError, match="image contains infinity"):
        clip_percentiles(np.array([1.0, np.inf]))


def test_to_uint8_truncates_like_the_reference():
    np.testing.assert_array_equal(to_uint8(np.array([0.0, 127.5, 254.9, 255.0, 255.0004])), [0, 127, 254, 255, 255])
    with pytest.raises(ValueError, match=r"values in \[0, 255\], got range \[-3.0, 10.0\]"):
        to_uint8(np.array([-3.0, 10.0]))


def test_to_rgb_uint8_layouts():
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3)
    rgb = to_rgb_uint8(grey)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], grey)
    np.testing.assert_array_equal(to_rgb_uint8(grey[:, :, None]), rgb)
    rgba = np.stack([grey, grey + 10, grey + 20, np.full_like(grey, 99)], axis=2)
    np.testing.assert_array_equal(to_rgb_uint8(rgba), rgba[:, :, :3])


def test_to_rgb_uint8_min_max_for_other_dtypes():
    image = np.array([[0.0, 0.5], [1.0, 0.25]])
    np.testing.assert_array_equal(to_rgb_uint8(image)[:, :, 0], [[0, 127], [255, 63]])
    wide = np.array([[1000, 3000]], dtype=np.uint16)
    np.testing.assert_array_equal(to_rgb_uint8(wide)[0, :, 1], [0, 255])
    assert np.all(to_rgb_uint8(np.full((3, 3), 5.0)) == 0)
    np.testing.assert_array_equal(to_rgb_uint8(np.array([[True, False]]))[0, :, 2], [255, 0])


@pytest.mark.parametrize(("image", "message"), [
    (np.array([[0.0, np.nan]]), r"image contains NaN \(first at index \(0, 1\)\)"),
    (np.array([[0.0, -np.inf]]), "image contains infinity"),
    (np.zeros((0, 4)), r"image is empty \(shape \(0, 4\)\)"),
    (np.zeros(5), r"shape \(H, W\) or \(H, W, C\), got shape \(5,\)"),
    (np.zeros((2, 2, 2, 2)), r"got shape \(2, 2, 2, 2\)"),
    (np.zeros((4, 4, 5)), r"1, 3 or 4 channels, got shape \(4, 4, 5\)"),
])
def test_to_rgb_uint8_errors(image, message):
    with pytest.raises(ValueError, match=message):
        to_rgb_uint8(image)


# ----------------------------------------------------------------------------------------------------
# Resizing and normalization
# ----------------------------------------------------------------------------------------------------


def test_resize_image_is_skimage_bicubic():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, size=(20, 12, 3)).astype(np.uint8)
    out = resize_image(image, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    expected = resize(image, (32, 32), order=3, preserve_range=True, anti_aliasing=True)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-4)
    assert out.min() >= 0 and out.max() <= 255
    np.testing.assert_allclose(resize_image(np.full((5, 7, 3), 40, np.uint8), 16), 40.0, atol=1e-4)
    shrunk = resize_image(image, 8, anti_aliasing=False)
    np.testing.assert_allclose(shrunk, resize(image, (8, 8), order=3, preserve_range=True, anti_aliasing=False),
                               atol=1e-4)


def test_resize_image_errors():
    with pytest.raises(ValueError, match=r"shape \(H, W, 3\), got \(4, 4\)"):
        resize_image(np.zeros((4, 4)), 8)
    with pytest.raises(ValueError, match="size must be a positive integer, got 0"):
        resize_image(np.zeros((4, 4, 3)), 0)


def test_resize_mask_nearest_keeps_labels_and_dtype():
    mask = np.array([[1, 2], [3, 0]], dtype=np.uint16)
    out = resize_mask(mask, (4, 4))
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 0, 0], [3, 3, 0, 0]])
    rng = np.random.default_rng(3)
    labels = rng.choice([0, 5, 300], size=(17, 13)).astype(np.int32)
    shrunk = resize_mask(labels, (9, 7))
    assert shrunk.shape == (9, 7) and set(np.unique(shrunk)) <= {0, 5, 300}
    boolean = resize_mask(np.eye(3, dtype=bool), (6, 6))
    assert boolean.dtype == bool and boolean.sum() == 12
    assert resize_mask(np.ones((2, 3, 4), np.uint8), (4, 6, 8)).shape == (4, 6, 8)


def test_resize_mask_errors():
    with pytest.raises(ValueError, match="integer or boolean labels, got dtype float64"):
        resize_mask(np.zeros((3, 3)), (6, 6))
    with pytest.raises(ValueError, match=r"shape \(6,\) must give 2 positive sizes"):
        resize_mask(np.zeros((3, 3), np.uint8), (6,))


def test_normalize_minmax_layout_and_values():
    rng = np.random.default_rng(4)
    image = rng.uniform(10, 200, size=(6, 6, 3)).astype(np.float32)
    tensor = normalize_for_model(image, "minmax")
    assert tensor.shape == (1, 3, 6, 6) and tensor.dtype == np.float32
    assert tensor.min() == pytest.approx(0.0) and tensor.max() == pytest.approx(1.0)
    low, high = image.min(), image.max()
    assert tensor[0, 2, 4, 1] == pytest.approx((image[4, 1, 2] - low) / (high - low), rel=1e-6)
    flat = normalize_for_model(np.full((4, 4, 3), 9.0), "minmax")
    assert np.all(flat == 0)


def test_normalize_imagenet_uses_sam_pixel_statistics():
    image = np.empty((2, 2, 3))
    image[0, 0] = IMAGENET_PIXEL_MEAN
    image[1, 1] = np.add(IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_STD)
    image[0, 1] = image[1, 0] = 0.0
    tensor = normalize_for_model(image, "imagenet")
    np.testing.assert_allclose(tensor[0, :, 0, 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(tensor[0, :, 1, 1], 1.0, atol=1e-6)
    np.testing.assert_allclose(tensor[0, :, 0, 1], [-123.675 / 58.395, -116.28 / 57.12, -103.53 / 57.375],
                               rtol=1e-6)


def test_normalize_errors():
    with pytest.raises(ValueError, match=r"unknown normalization mode 'zscore'; choose one of \['minmax', 'imagenet"):
        normalize_for_model(np.zeros((4, 4, 3)), "zscore")
    with pytest.raises(ValueError, match=r"shape \(H, W, 3\), got \(3, 4, 4\)"):
        normalize_for_model(np.zeros((3, 4, 4)))


def test_medsam_model_input_chain():
    image = np.arange(35, dtype=np.float64).reshape(5, 7)
    tensor = medsam_model_input(image, 16)
    assert tensor.shape == (1, 3, 16, 16)
    assert tensor.min() == pytest.approx(0.0) and tensor.max() == pytest.approx(1.0)
    np.testing.assert_array_equal(tensor[0, 0], tensor[0, 2])


def test_minmax_normalize_range():
    out = minmax_normalize(np.array([[3.0, 5.0], [7.0, 11.0]]))
    np.testing.assert_allclose(out, [[0.0, 0.25], [0.5, 1.0]])


# ----------------------------------------------------------------------------------------------------
# Lite MedSAM: longest side, padding
# ----------------------------------------------------------------------------------------------------


def test_resize_longest_side_shapes_and_area_average():
    assert resize_longest_side(np.zeros((100, 50, 3)), 256).shape == (256, 128, 3)
    assert resize_longest_side(np.zeros((300, 700)), 256).shape == (110, 256)   # int(300 * 256/700 + 0.5)
    blocks = np.array([[0, 2, 10, 10], [4, 6, 10, 10]], dtype=np.uint8)          # 2x2 blocks -> their means
    out = resize_longest_side(blocks, 2)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[3.0, 10.0]])
    up = resize_longest_side(np.full((3, 2, 3), 17, np.uint8), 6)
    assert up.shape == (6, 4, 3)
    np.testing.assert_allclose(up, 17.0)


def test_pad_to_square_bottom_right():
    image = np.arange(1, 13, dtype=np.float32).reshape(2, 2, 3)
    padded = pad_to_square(image, 4)
    assert padded.shape == (4, 4, 3)
    np.testing.assert_array_equal(padded[:2, :2], image)
    assert np.all(padded[2:] == 0) and np.all(padded[:, 2:] == 0)
    assert pad_to_square(np.ones((3, 1), np.uint8), 3).tolist() == [[1, 0, 0], [1, 0, 0], [1, 0, 0]]
    with pytest.raises(ValueError, match=r"\(5, 2\) is larger than the 4 x 4 target"):
        pad_to_square(np.zeros((5, 2)), 4)


def test_lite_model_input_normalizes_before_padding():
    image = np.full((8, 4), 100, np.uint8)
    image[0, 0] = 200
    tensor, (height, width) = lite_model_input(image, 16)
    assert tensor.shape == (1, 3, 16, 16) and (height, width) == (16, 8)
    inside = tensor[0, :, :height, :width]
    assert inside.min().item() == pytest.approx(0.0) and inside.max().item() == pytest.approx(1.0)
    assert np.all(tensor[0, :, :, width:] == 0)


def test_scale_boxes_longest_side():
    boxes = np.array([[10, 20, 100, 500], [0, 0, 255, 511]])
    np.testing.assert_allclose(scale_boxes_longest_side(boxes, (512, 256), 256),
                               [[5, 10, 50, 250], [0, 0, 127.5, 255.5]])
    np.testing.assert_allclose(scale_boxes_longest_side(np.array([3, 3, 6, 6]), (10, 30), 60), [6, 6, 12, 12])


# ----------------------------------------------------------------------------------------------------
# Boxes
# ----------------------------------------------------------------------------------------------------


def test_validate_boxes_single_and_clipped_at_borders():
    out = validate_boxes([10, 5, 40, 30], (64, 100, 3))
    assert out.dtype == np.float64 and out.shape == (1, 4)
    np.testing.assert_array_equal(out, [[10, 5, 40, 30]])
    clipped = validate_boxes(np.array([[-5, -3, 120, 70], [90, 60, 99, 63]]), (64, 100))
    np.testing.assert_array_equal(clipped, [[0, 0, 99, 63], [90, 60, 99, 63]])


@pytest.mark.parametrize(("boxes", "message"), [
    ([[0, 0, 5, 5], [1, np.nan, 4, 4]], r"box 1 \[1.0, nan, 4.0, 4.0\] has a NaN or infinite coordinate"),
    ([[0, 0, np.inf, 5]], r"box 0 .* has a NaN or infinite coordinate"),
    ([[5, 0, 5, 5]], r"box 0 \[5.0, 0.0, 5.0, 5.0\] must have x1 > x0 and y1 > y0"),
    ([[0, 0, 5, 5], [0, 0, 5, 5], [0, 6, 5, 2]], r"box 2 \[0.0, 6.0, 5.0, 2.0\] must have x1 > x0"),
    ([[120, 5, 130, 10]], r"box 0 \[120.0, 5.0, 130.0, 10.0\] lies outside the image of height 64 and width 100"),
    ([[5, 64, 10, 80]], r"box 0 .* lies outside the image .*y in \[0, 63\]"),
    ([[-20, -20, -1, 10]], r"box 0 .* lies outside the image"),
    ([[-20, 5, 0, 10]], r"box 0 .* lies outside the image"),               # only touches column 0: no area
    (np.zeros((2, 5)), r"shape \(4,\) or \(N, 4\) as \(x0, y0, x1, y1\), got \(2, 5\)"),
    (np.zeros((0, 4)), "boxes is empty"),
    (np.array(["a", "b", "c", "d"]), "boxes must hold numbers"),
])
def test_validate_boxes_errors(boxes, message):
    with pytest.raises(ValueError, match=message):
        validate_boxes(boxes, (64, 100))


def test_scale_boxes_medsam_formula():
    boxes = np.array([[0, 0, 100, 200], [50, 100, 99, 199]])                 # image H=200, W=100
    np.testing.assert_allclose(scale_boxes(boxes, (200, 100), 1024), [[0, 0, 1024, 1024], [512, 512, 1013.76, 1018.88]])
    single = scale_boxes(np.array([95, 255, 190, 350]), (512, 512), 1024)
    assert single.shape == (4,)
    np.testing.assert_allclose(single, [190, 510, 380, 700])
    with pytest.raises(ValueError, match=r"original_hw must start with a positive \(H, W\), got \(0, 5\)"):
        scale_boxes(boxes, (0, 5))
    with pytest.raises(ValueError, match=r"shape \(4,\) or \(N, 4\), got \(3,\)"):
        scale_boxes(np.zeros(3), (10, 10))


def test_boxes_from_mask_tight_margin_and_order():
    mask = np.zeros((10, 12), np.uint8)
    mask[2:5, 3:8] = 1                                            # rows 2..4, columns 3..7
    mask[8:10, 0:2] = 4
    np.testing.assert_array_equal(boxes_from_mask(mask), [[3, 2, 7, 4], [0, 8, 1, 9]])
    np.testing.assert_array_equal(boxes_from_mask(mask, margin=3), [[0, 0, 10, 7], [0, 5, 4, 9]])
    np.testing.assert_array_equal(boxes_from_mask(mask, labels=[4, 1]), [[0, 8, 1, 9], [3, 2, 7, 4]])
    assert boxes_from_mask(mask).dtype == np.int64
    np.testing.assert_array_equal(boxes_from_mask(mask == 1), [[3, 2, 7, 4]])


def test_boxes_from_mask_3d_uses_challenge_column_order():
    volume = np.zeros((6, 8, 9), np.uint8)
    volume[1:4, 2:5, 6:9] = 2                                     # z 1..3, y 2..4, x 6..8
    np.testing.assert_array_equal(boxes_from_mask(volume), [[6, 2, 1, 8, 4, 3]])
    np.testing.assert_array_equal(boxes_from_mask(volume, margin=1), [[5, 1, 0, 8, 5, 4]])


def test_boxes_from_mask_errors():
    with pytest.raises(ValueError, match=r"mask is empty: no nonzero label in a mask of shape \(4, 4\)"):
        boxes_from_mask(np.zeros((4, 4), np.uint8))
    mask = np.zeros((4, 4), np.uint8)
    mask[1, 1] = 1
    with pytest.raises(ValueError, match="label 7 does not occur in the mask"):
        boxes_from_mask(mask, labels=[1, 7])
    with pytest.raises(ValueError, match="include 0, the background"):
        boxes_from_mask(mask, labels=[0])
    with pytest.raises(ValueError, match="margin must be a non-negative integer, got -1"):
        boxes_from_mask(mask, margin=-1)
    with pytest.raises(ValueError, match="integer or boolean labels, got dtype float64"):
        boxes_from_mask(mask.astype(float))


def test_volumes_are_scaled_a_few_slices_at_a_time_exactly_as_whole():
    rng = np.random.default_rng(0)
    ct = rng.integers(-1100, 1500, (21, 30, 40)).astype(np.int16)
    mr = rng.normal(300, 200, (19, 20, 30)).astype(np.float32).clip(0)
    np.testing.assert_array_equal(scale_volume(ct, "ct"), np.round(window_ct(ct)).astype(np.uint8))
    np.testing.assert_array_equal(scale_volume(mr, "mr"), np.round(clip_percentiles(mr)).astype(np.uint8))
    np.testing.assert_array_equal(scale_volume(ct, "auto"), scale_volume(ct, "ct"))   # air below -200 HU: CT
    np.testing.assert_array_equal(scale_volume(mr, "auto"), scale_volume(mr, "mr"))
    assert not scale_volume(np.zeros((3, 4, 4)), "mr").any()
    with pytest.raises(ValueError, match="unknown CT window 'liver'"):
        scale_volume(ct, "ct", "liver")
    with pytest.raises(ValueError, match="modality must be one of"):
        scale_volume(ct, "pet")
