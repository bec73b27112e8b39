"""Segmentation metrics (Dice, NSD, HD95) on shapes whose answers are known by hand or by brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gnnseg.seg.metrics import (
    SurfaceDistances,
    dice,
    evaluate_case,
    hausdorff_distance_95,
    normalized_surface_dice,
    robust_hausdorff_distance,
    surface_distances,
)

# --------------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------------

def ellipsoid(shape: tuple[int, ...], centre: tuple[float, ...], semi_axes: tuple[float, ...]) -> np.ndarray:
    """Voxels whose centre lies inside the axis-aligned ellipsoid (a disc or ball when the axes are equal)."""
    grid = np.indices(shape).astype(float)
    return sum(((grid[i] - centre[i]) / semi_axes[i]) ** 2 for i in range(len(shape))) <= 1.0


def ball(shape: tuple[int, ...], centre: tuple[float, ...], radius: float) -> np.ndarray:
    return ellipsoid(shape, centre, (radius,) * len(shape))


def box(shape: tuple[int, ...], start: tuple[int, ...], size: int) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


def shifted(centre: tuple[float, ...], axis: int, k: float) -> tuple[float, ...]:
    return tuple(c + (k if i == axis else 0) for i, c in enumerate(centre))


def exact_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice counted independently: overlap and sizes by numpy sums."""
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


# --------------------------------------------------------------------------------------------------
# Identical shapes
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mask, spacing", [
    (ball((50, 50), (25, 24), 20), (1.0, 1.0)),
    (ball((50, 50), (25, 24), 20), (0.7, 2.5)),
    (ball((26, 26, 26), (13, 12, 13), 10), (1.0, 1.0, 1.0)),
    (ball((26, 26, 26), (13, 12, 13), 10), (2.5, 1.0, 0.7)),
])
def test_identical_masks_agree_perfectly(mask: np.ndarray, spacing: tuple[float, ...]) -> None:
    assert dice(mask, mask) == 1.0
    assert normalized_surface_dice(mask, mask, 0.0, spacing) == 1.0
    assert hausdorff_distance_95(mask, mask, spacing) == 0.0
    assert robust_hausdorff_distance(mask, mask, 100, spacing) == 0.0
    distances = surface_distances(mask, mask, spacing)
    assert np.all(distances.distances_gt_to_pred == 0) and np.all(distances.distances_pred_to_gt == 0)
    np.testing.assert_allclose(distances.surfel_areas_gt.sum(), distances.surfel_areas_pred.sum())


def test_mask_filling_the_whole_array_has_a_surface() -> None:
    full = np.ones((6, 7), bool)
    inner = np.zeros_like(full)
    inner[1:-1, 1:-1] = True
    # The outline of a 6 x 7 box: 2 * (5 + 6) unit steps plus 4 cut corners of sqrt(2)/2.
    perimeter = surface_distances(full, full).surfel_areas_gt.sum()
    assert perimeter == pytest.approx(22 + 2 * math.sqrt(2))
    # The 4 x 5 box inside it (outline 14 + 2 sqrt(2)) is 1 away everywhere, except that the full box's
    # 4 corner pieces (2 sqrt(2) of its 22 + 2 sqrt(2)) are sqrt(2) from the inner corners.
    assert hausdorff_distance_95(inner, full) == pytest.approx(math.sqrt(2))
    assert normalized_surface_dice(inner, full, 1.0) == pytest.approx((36 + 2 * math.sqrt(2)) / (36 + 4 * math.sqrt(2)))
    assert normalized_surface_dice(inner, full, math.sqrt(2)) == 1.0


# --------------------------------------------------------------------------------------------------
# Shifted discs and spheres
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 3, 6])
def test_discs_offset_by_k_voxels(k: int) -> None:
    shape, centre, radius = (64, 64), (30.0, 31.0), 20
    gt = ball(shape, centre, radius)
    pred = ball(shape, shifted(centre, 0, k), radius)
    assert dice(pred, gt) == pytest.approx(exact_dice(pred, gt), abs=1e-15)
    # Every surfel of one disc has its translate, k voxels away, on the other surface.
    assert normalized_surface_dice(pred, gt, float(k)) == 1.0
    assert normalized_surface_dice(pred, gt, k / 4) < 0.75
    assert k - 1 <= hausdorff_distance_95(pred, gt) <= k
    assert robust_hausdorff_distance(pred, gt, 100) == pytest.approx(k)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_spheres_offset_by_k_voxels(axis: int) -> None:
    shape, centre, radius, k = (30, 30, 30), (14.0, 15.0, 14.5), 10, 3
    gt = ball(shape, centre, radius)
    pred = ball(shape, shifted(centre, axis, k), radius)
    assert dice(pred, gt) == pytest.approx(exact_dice(pred, gt), abs=1e-15)
    assert normalized_surface_dice(pred, gt, float(k)) == 1.0
    assert normalized_surface_dice(pred, gt, 0.5) < 0.6
    assert k - 1 <= hausdorff_distance_95(pred, gt) <= k


@pytest.mark.parametrize("axis", [0, 2])
def test_anisotropic_spacing_scales_the_distance_along_the_offset_axis(axis: int) -> None:
    # A sphere of radius 12.5 mm drawn on voxels 2.5 mm long along `axis`, moved k voxels = 2.5 k mm.
    k = 2
    spacing = tuple(2.5 if i == axis else 1.0 for i in range(3))
    semi_axes = tuple(12.5 / s for s in spacing)
    shape = tuple(int(2 * a) + 8 for a in semi_axes)
    centre = tuple(n / 2 - 0.2 for n in shape)
    gt = ellipsoid(shape, centre, semi_axes)
    pred = ellipsoid(shape, shifted(centre, axis, k), semi_axes)
    hd95 = hausdorff_distance_95(pred, gt, spacing)
    assert 2.5 * (k - 1) <= hd95 <= 2.5 * k
    assert hd95 > 1.5 * hausdorff_distance_95(pred, gt)          # the same voxels at 1 mm: at most k
    assert normalized_surface_dice(pred, gt, 2.5 * k, spacing) == 1.0
    assert normalized_surface_dice(pred, gt, 2.5 * (k - 1), spacing) < 0.8


def test_uniform_spacing_scales_lengths_areas_and_tolerances_exactly() -> None:
    shape, centre = (28, 30, 26), (13.0, 14.0, 12.0)
    gt = ellipsoid(shape, centre, (9, 11, 7))
    pred = ellipsoid(shape, shifted(centre, 1, 2), (8, 11, 8))
    unit = surface_distances(pred, gt)
    scaled = surface_distances(pred, gt, (2.0, 2.0, 2.0))
    np.testing.assert_allclose(scaled.distances_gt_to_pred, 2 * unit.distances_gt_to_pred)
    np.testing.assert_allclose(scaled.surfel_areas_gt, 4 * unit.surfel_areas_gt)
    assert normalized_surface_dice(pred, gt, 3.0, (2.0, 2.0, 2.0)) == pytest.approx(
        normalized_surface_dice(pred, gt, 1.5))
    assert hausdorff_distance_95(pred, gt, (2.0, 2.0, 2.0)) == pytest.approx(2 * hausdorff_distance_95(pred, gt))


def test_concentric_discs_are_their_radius_difference_apart() -> None:
    big = ball((64, 64), (32, 32), 20)
    small = ball((64, 64), (32, 32), 15)
    assert dice(small, big) == pytest.approx(exact_dice(small, big), abs=1e-15)
    assert 4 <= hausdorff_distance_95(small, big) <= 6
    assert normalized_surface_dice(small, big, 6.0) == 1.0
    assert normalized_surface_dice(small, big, 3.0) == 0.0


def test_swapping_pred_and_gt_swaps_the_directions_only() -> None:
    gt = ellipsoid((40, 40), (20, 18), (12, 7))
    pred = ball((40, 40), (22, 20), 9)
    forward, backward = surface_distances(pred, gt, (0.8, 1.3)), surface_distances(gt, pred, (0.8, 1.3))
    np.testing.assert_array_equal(forward.distances_gt_to_pred, backward.distances_pred_to_gt)
    np.testing.assert_array_equal(forward.surfel_areas_pred, backward.surfel_areas_gt)
    assert normalized_surface_dice(pred, gt, 1.0, (0.8, 1.3)) == normalized_surface_dice(gt, pred, 1.0, (0.8, 1.3))
    assert hausdorff_distance_95(pred, gt, (0.8, 1.3)) == hausdorff_distance_95(gt, pred, (0.8, 1.3))


# --------------------------------------------------------------------------------------------------
# Squares and cubes: values derived by hand
# --------------------------------------------------------------------------------------------------

def test_square_shifted_by_two_matches_hand_derived_values() -> None:
    """A 10 x 10 square and the same square 2 voxels further along axis 0.

    The surfels are the 40 voxel corners on the square's outline: 36 straight unit steps and 4 cut
    corners of length sqrt(2)/2, so the perimeter is 36 + 2 sqrt(2). From one square to the other,
    the leading side (11 points: 9 + sqrt(2) long) is 2 away, and so are the 7 middle points of the
    trailing side (7 long), which lies inside the other square 2 from its far side; the first point of
    each lateral side and the 2nd and 9th points of the trailing side (4 long) are 1 away; the other
    16 lateral points and the 2 trailing corners (16 + sqrt(2) long) are on the other outline (0 away).
    Both directions are mirror images.
    """
    gt = box((20, 20), (4, 5), 10)
    pred = box((20, 20), (6, 5), 10)
    distances = surface_distances(pred, gt)
    perimeter = 36 + 2 * math.sqrt(2)
    assert distances.surfel_areas_gt.sum() == pytest.approx(perimeter)
    assert distances.surfel_areas_pred.sum() == pytest.approx(perimeter)
    for direction, areas in ((distances.distances_gt_to_pred, distances.surfel_areas_gt),
                             (distances.distances_pred_to_gt, distances.surfel_areas_pred)):
        assert areas[direction == 0].sum() == pytest.approx(16 + math.sqrt(2))
        assert areas[direction == 1].sum() == pytest.approx(4)
        assert areas[direction == 2].sum() == pytest.approx(16 + math.sqrt(2))
    assert normalized_surface_dice(pred, gt, 2.0) == 1.0
    assert normalized_surface_dice(pred, gt, 1.0) == pytest.approx((20 + math.sqrt(2)) / perimeter)
    assert normalized_surface_dice(pred, gt, 0.5) == pytest.approx((16 + math.sqrt(2)) / perimeter)
    assert hausdorff_distance_95(pred, gt) == 2.0
    # 44.9 % of the outline is 0 away and 55.1 % at most 1 away: the median distance is 1.
    assert robust_hausdorff_distance(pred, gt, 50) == 1.0
    assert robust_hausdorff_distance(pred, gt, 40) == 0.0
    assert dice(pred, gt) == pytest.approx(2 * 80 / 200)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 1.0, 0.7)])
def test_cube_surface_area_matches_hand_derived_value(spacing: tuple[float, float, float]) -> None:
    """An L-voxel cube's surfels: (L-1)^2 unit faces per side, 4 (L-1) bevelled edge pieces per axis,
    8 corner triangles. With spacing s, a face normal to axis i is prod(s)/s_i, an edge piece along
    axis i is s_i * |(s_j, s_k)| / 2 and a corner triangle is |(s0 s1, s0 s2, s1 s2)| / 8."""
    n = 7
    cube = box((12, 12, 12), (2, 3, 1), n)
    s = np.array(spacing)
    faces = sum(2 * (n - 1) ** 2 * np.prod(s) / s[i] for i in range(3))
    edges = sum(4 * (n - 1) * s[i] * 0.5 * np.hypot(*np.delete(s, i)) for i in range(3))
    corners = 8 * 0.125 * math.sqrt((s[0] * s[1]) ** 2 + (s[0] * s[2]) ** 2 + (s[1] * s[2]) ** 2)
    area = surface_distances(cube, cube, spacing).surfel_areas_gt.sum()
    assert area == pytest.approx(faces + edges + corners)
    if spacing == (1.0, 1.0, 1.0):
        assert area == pytest.approx(6 * 36 + 6 * math.sqrt(2) * 6 + math.sqrt(3))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 1.0, 0.7)])
def test_single_voxel_is_a_diamond_or_an_octahedron(spacing: tuple[float, float, float]) -> None:
    voxel = np.zeros((3, 3, 3), bool)
    voxel[1, 1, 1] = True
    s0, s1, s2 = spacing
    area = surface_distances(voxel, voxel, spacing).surfel_areas_gt.sum()
    assert area == pytest.approx(math.sqrt((s0 * s1) ** 2 + (s0 * s2) ** 2 + (s1 * s2) ** 2))
    pixel = voxel[1]
    assert surface_distances(pixel, pixel, (s0, s1)).surfel_areas_gt.sum() == pytest.approx(2 * math.hypot(s0, s1))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 1.0, 0.7)])
def test_cubes_offset_along_axis_zero_have_hd95_k_times_its_spacing(spacing: tuple[float, float, float]) -> None:
    # The leading face (a sixth of the surface) is exactly k * spacing[0] away and nothing is farther.
    k = 3
    gt = box((20, 14, 14), (2, 2, 2), 10)
    pred = box((20, 14, 14), (2 + k, 2, 2), 10)
    assert hausdorff_distance_95(pred, gt, spacing) == pytest.approx(k * spacing[0])
    assert normalized_surface_dice(pred, gt, k * spacing[0], spacing) == 1.0
    assert normalized_surface_dice(pred, gt, k * spacing[0] - 0.1, spacing) < 1.0
    assert dice(pred, gt) == pytest.approx(2 * 7 / 20)


# --------------------------------------------------------------------------------------------------
# Independent checks: brute force in 2D, axis order in 3D, the reference package's numbers
# --------------------------------------------------------------------------------------------------

def brute_force_surface_2d(mask: np.ndarray, spacing: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Surfel positions (mm) and lengths of a 2D mask, from the marching-squares rules stated directly.

    Each point between four pixels whose 2x2 window is mixed is a surfel. One pixel (or three) in
    the window: a cut corner, half the pixel diagonal. Two side by side along axis a: a straight
    step of spacing[a]. Two on a diagonal: two cut corners.
    """
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(mask, 1), (2, 2))
    count = windows.sum(axis=(-1, -2))
    surfel = (count > 0) & (count < 4)
    half_diagonal = 0.5 * math.hypot(*spacing)
    length = np.where(count % 2 == 1, half_diagonal, 0.0)
    same_row = windows[..., 0, 0] == windows[..., 0, 1]
    same_column = windows[..., 0, 0] == windows[..., 1, 0]
    length = np.where((count == 2) & same_row, spacing[1], length)
    length = np.where((count == 2) & same_column, spacing[0], length)
    length = np.where((count == 2) & ~same_row & ~same_column, 2 * half_diagonal, length)
    positions = np.argwhere(surfel) * np.asarray(spacing)
    return positions, length[surfel]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surface_distances_2d_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    spacing = (0.8, 1.7)
    gt = rng.random((14, 17)) < 0.35
    pred = rng.random((14, 17)) < 0.35
    gt_points, gt_lengths = brute_force_surface_2d(gt, spacing)
    pred_points, pred_lengths = brute_force_surface_2d(pred, spacing)
    pairwise = np.linalg.norm(gt_points[:, None, :] - pred_points[None, :, :], axis=-1)
    result = surface_distances(pred, gt, spacing)
    for distances, lengths, expected_distances, expected_lengths in (
        (result.distances_gt_to_pred, result.surfel_areas_gt, pairwise.min(axis=1), gt_lengths),
        (result.distances_pred_to_gt, result.surfel_areas_pred, pairwise.min(axis=0), pred_lengths),
    ):
        # Sort both by (distance, length); distances are rounded so that float ties sort alike.
        order = np.lexsort((lengths, distances.round(9)))
        expected_order = np.lexsort((expected_lengths, expected_distances.round(9)))
        np.testing.assert_allclose(distances[order], expected_distances[expected_order], rtol=1e-12)
        np.testing.assert_allclose(lengths[order], expected_lengths[expected_order], rtol=1e-12)
        assert np.all(np.diff(distances) >= 0)                       # each direction comes sorted


def test_3d_results_do_not_depend_on_axis_order() -> None:
    shape = (24, 28, 22)
    gt = ellipsoid(shape, (11, 13, 10), (8, 10, 6)) | ellipsoid(shape, (15, 8, 12), (5, 4, 7))
    pred = ellipsoid(shape, (12, 14, 10), (9, 9, 7))
    spacing = (2.5, 1.0, 0.7)
    order = (2, 0, 1)
    moved_spacing = tuple(spacing[i] for i in order)
    moved_pred, moved_gt = np.transpose(pred, order), np.transpose(gt, order)
    original, moved = surface_distances(pred, gt, spacing), surface_distances(moved_pred, moved_gt, moved_spacing)
    np.testing.assert_allclose(np.sort(original.surfel_areas_gt), np.sort(moved.surfel_areas_gt), rtol=1e-12)
    np.testing.assert_allclose(original.distances_gt_to_pred, moved.distances_gt_to_pred, rtol=1e-12)
    assert normalized_surface_dice(moved_pred, moved_gt, 1.5, moved_spacing) == pytest.approx(
        normalized_surface_dice(pred, gt, 1.5, spacing), rel=1e-12)
    assert hausdorff_distance_95(moved_pred, moved_gt, moved_spacing) == pytest.approx(
        hausdorff_distance_95(pred, gt, spacing), rel=1e-12)


def test_2d_matches_the_reference_package() -> None:
    """Numbers computed offline with DeepMind's surface-distance code (PyPI ctg-surface-distance 0.1):
    2D contour lengths and all distances follow the same rules, so the results agree to rounding."""
    gt = ellipsoid((64, 64), (30, 32), (18, 11))
    pred = ball((64, 64), (33, 30), 14)
    spacing = (0.8, 1.3)
    assert dice(pred, gt) == pytest.approx(0.8035714285714286, rel=1e-12)
    assert normalized_surface_dice(pred, gt, 1.0, spacing) == pytest.approx(0.35204648063578714, rel=1e-12)
    assert normalized_surface_dice(pred, gt, 2.0, spacing) == pytest.approx(0.5003687471510758, rel=1e-12)
    assert hausdorff_distance_95(pred, gt, spacing) == pytest.approx(6.105735008989499, rel=1e-12)
    assert robust_hausdorff_distance(pred, gt, 100, spacing) == pytest.approx(6.928924880528004, rel=1e-12)
    result = surface_distances(pred, gt, spacing)
    assert result.surfel_areas_gt.sum() == pytest.approx(99.49874757641075, rel=1e-12)
    assert result.surfel_areas_pred.sum() == pytest.approx(100.00448258540025, rel=1e-12)


def test_3d_is_close_to_the_reference_package() -> None:
    """Same source as the 2D case. Distances are identical; surfel areas differ only where a block's
    boundary piece is not planar (see the module docstring), here by under 1 %, which moves NSD by
    under 0.001 and leaves HD95 on the same surfel distance."""
    shape = (28, 32, 30)
    gt = ellipsoid(shape, (13, 15, 14), (9, 12, 7))
    pred = ball(shape, (15, 14, 15), 8)
    spacing = (2.5, 1.0, 0.7)
    result = surface_distances(pred, gt, spacing)
    assert (result.distances_gt_to_pred.size, result.distances_pred_to_gt.size) == (1576, 1184)
    assert dice(pred, gt) == pytest.approx(0.6902318510072216, rel=1e-12)
    assert hausdorff_distance_95(pred, gt, spacing) == pytest.approx(5.385164807134504, rel=1e-12)
    assert robust_hausdorff_distance(pred, gt, 100, spacing) == pytest.approx(7.934733769950949, rel=1e-12)
    assert normalized_surface_dice(pred, gt, 1.0, spacing) == pytest.approx(0.48836127273601687, abs=1e-3)
    assert normalized_surface_dice(pred, gt, 2.0, spacing) == pytest.approx(0.7122166038557697, abs=1e-3)
    assert result.surfel_areas_gt.sum() == pytest.approx(2139.2155466671093, rel=1e-2)
    assert result.surfel_areas_pred.sum() == pytest.approx(1493.6838280960737, rel=1e-2)


# --------------------------------------------------------------------------------------------------
# Empty masks
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, spacing", [((8, 9), (1.0, 2.0)), ((5, 6, 7), (1.0, 1.0, 3.0))])
def test_both_masks_empty(shape: tuple[int, ...], spacing: tuple[float, ...]) -> None:
    empty = np.zeros(shape, bool)
    assert dice(empty, empty) == 1.0
    assert normalized_surface_dice(empty, empty, 1.0, spacing) == 1.0
    assert hausdorff_distance_95(empty, empty, spacing) == 0.0
    assert robust_hausdorff_distance(empty, empty, 100, spacing) == 0.0
    result = surface_distances(empty, empty, spacing)
    assert isinstance(result, SurfaceDistances)
    assert all(array.size == 0 for array in result)


@pytest.mark.parametrize("empty_side", ["pred", "gt"])
@pytest.mark.parametrize("shape", [(8, 9), (5, 6, 7)])
def test_exactly_one_mask_empty(empty_side: str, shape: tuple[int, ...]) -> None:
    empty = np.zeros(shape, bool)
    present = box(shape, (1,) * len(shape), 3)
    pred, gt = (empty, present) if empty_side == "pred" else (present, empty)
    assert dice(pred, gt) == 0.0
    assert normalized_surface_dice(pred, gt, 100.0) == 0.0
    assert hausdorff_distance_95(pred, gt) == math.inf
    result = surface_distances(pred, gt)
    if empty_side == "pred":
        assert result.distances_pred_to_gt.size == 0 and result.surfel_areas_pred.size == 0
        assert result.distances_gt_to_pred.size > 0 and np.all(np.isinf(result.distances_gt_to_pred))
    else:
        assert result.distances_gt_to_pred.size == 0 and result.surfel_areas_gt.size == 0
        assert result.distances_pred_to_gt.size > 0 and np.all(np.isinf(result.distances_pred_to_gt))


# --------------------------------------------------------------------------------------------------
# Input conversion and errors
# --------------------------------------------------------------------------------------------------

def test_any_nonzero_value_is_foreground() -> None:
    gt = box((10, 10), (2, 2), 4)
    pred = box((10, 10), (3, 2), 4)
    as_int = pred.astype(np.int64) * 7
    as_float = pred.astype(np.float32) * 0.5
    as_list = pred.astype(int).tolist()
    expected = (dice(pred, gt), normalized_surface_dice(pred, gt, 0.5), hausdorff_distance_95(pred, gt))
    for converted in (as_int, as_float, as_list):
        assert (dice(converted, gt), normalized_surface_dice(converted, gt, 0.5),
                hausdorff_distance_95(converted, gt)) == expected


def _call_each(pred: object, gt: object, **kwargs: object) -> list:
    spacing = kwargs.get("spacing")
    return [
        lambda: dice(pred, gt),
        lambda: surface_distances(pred, gt, spacing),
        lambda: normalized_surface_dice(pred, gt, 1.0, spacing),
        lambda: hausdorff_distance_95(pred, gt, spacing),
        lambda: robust_hausdorff_distance(pred, gt, 95, spacing),
    ]


def test_mismatched_shapes_are_named() -> None:
    for call in _call_each(np.zeros((4, 5)), np.zeros((4, 6))):
        with pytest.raises(ValueError, match=r"^pred has shape \(4, 5\) but gt has shape \(4, 6\)$"):
            call()


@pytest.mark.parametrize("shape", [(7,), (2, 3, 4, 5)])
def test_unsupported_dimensions_are_named(shape: tuple[int, ...]) -> None:
    for call in _call_each(np.zeros(shape), np.zeros(shape)):
        with pytest.raises(ValueError, match=rf"masks must be 2D or 3D, got ndim={len(shape)} "
                                             rf"\(shape \({', '.join(map(str, shape))},?\)\)"):
            call()


@pytest.mark.parametrize("side", ["pred", "gt"])
def test_nan_in_a_mask_is_named_with_its_index(side: str) -> None:
    good = np.zeros((4, 5))
    bad = np.zeros((4, 5))
    bad[2, 3] = np.nan
    pred, gt = (bad, good) if side == "pred" else (good, bad)
    for call in _call_each(pred, gt):
        with pytest.raises(ValueError, match=rf"^{side} contains NaN \(first at index \(2, 3\)\)"):
            call()


@pytest.mark.parametrize("spacing, message", [
    ((1.0, 1.0, 1.0), r"spacing \(1\.0, 1\.0, 1\.0\) has 3 entries but the masks have 2 dimensions"),
    ((1.0,), r"spacing \(1\.0,\) has 1 entries but the masks have 2 dimensions"),
    ((1.0, 0.0), r"spacing must be positive and finite along every axis, got \(1\.0, 0\.0\)"),
    ((-1.0, 1.0), r"spacing must be positive and finite along every axis, got \(-1\.0, 1\.0\)"),
    ((1.0, float("nan")), r"spacing must be positive and finite along every axis, got \(1\.0, nan\)"),
    ((float("inf"), 1.0), r"spacing must be positive and finite along every axis, got \(inf, 1\.0\)"),
    (2.0, r"spacing must be a sequence of 2 voxel sizes in mm, got 2\.0"),
])
def test_bad_spacing_is_named(spacing: tuple[float, ...], message: str) -> None:
    mask = box((6, 6), (1, 1), 3)
    for call in _call_each(mask, mask, spacing=spacing)[1:]:            # dice takes no spacing
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(ValueError, match=message):
        evaluate_case(mask.astype(int), mask.astype(int), [1], spacing=spacing)


@pytest.mark.parametrize("tolerance", [-0.5, float("nan"), float("inf")])
def test_bad_tolerance_is_named(tolerance: float) -> None:
    mask = box((6, 6), (1, 1), 3)
    with pytest.raises(ValueError, match=rf"tolerance_mm must be a finite number >= 0, got {tolerance}"):
        normalized_surface_dice(mask, mask, tolerance)
    with pytest.raises(ValueError, match=rf"tolerance_mm must be a finite number >= 0, got {tolerance}"):
        evaluate_case(mask.astype(int), mask.astype(int), [1], tolerance_mm=tolerance)


@pytest.mark.parametrize("percentile", [-1.0, 100.5, float("nan")])
def test_bad_percentile_is_named(percentile: float) -> None:
    mask = box((6, 6), (1, 1), 3)
    with pytest.raises(ValueError, match=rf"percentile must lie in \[0, 100\], got {percentile}"):
        robust_hausdorff_distance(mask, mask, percentile)


# --------------------------------------------------------------------------------------------------
# Multi-class label maps
# --------------------------------------------------------------------------------------------------

def test_evaluate_case_scores_each_label_as_a_binary_mask() -> None:
    shape, spacing = (20, 24, 22), (2.0, 1.0, 1.0)
    gt = np.zeros(shape, np.int16)
    pred = np.zeros(shape, np.int16)
    gt[box(shape, (2, 2, 2), 6)] = 1                           # label 1: identical in both
    pred[box(shape, (2, 2, 2), 6)] = 1
    gt[box(shape, (10, 12, 10), 7)] = 2                        # label 2: shifted 2 voxels along axis 0
    pred[box(shape, (12, 12, 10), 7)] = 2
    gt[box(shape, (2, 14, 14), 4)] = 4                         # label 4: missed by pred
    results = evaluate_case(pred, gt, [1, 2, 3, 4], spacing=spacing, tolerance_mm=2.0)
    assert set(results) == {1, 2, 3, 4}
    assert results[1] == {"dice": 1.0, "nsd": 1.0, "hd95": 0.0}
    assert results[2]["dice"] == pytest.approx(2 * 5 / 14)
    assert results[2]["hd95"] == pytest.approx(4.0)            # 2 voxels of 2 mm
    assert results[2]["nsd"] == pytest.approx(normalized_surface_dice(pred == 2, gt == 2, 2.0, spacing))
    assert results[2]["nsd"] < 1.0
    assert evaluate_case(pred, gt, [2], spacing=spacing, tolerance_mm=4.0)[2]["nsd"] == 1.0
    assert results[3] == {"dice": 1.0, "nsd": 1.0, "hd95": 0.0}   # absent from both
    assert results[4] == {"dice": 0.0, "nsd": 0.0, "hd95": math.inf}


def test_evaluate_case_checks_its_inputs() -> None:
    with pytest.raises(ValueError, match=r"pred has shape \(3, 4\) but gt has shape \(3, 5\)"):
        evaluate_case(np.zeros((3, 4), int), np.zeros((3, 5), int), [1])
    labels = np.zeros((3, 4))
    labels[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"pred_labels contains NaN \(first at index \(1, 1\)\)"):
        evaluate_case(labels, np.zeros((3, 4)), [1])
