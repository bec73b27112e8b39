"""TinyViT (MobileSAM / Lite MedSAM encoder): equal to timm's with the same weights, and the released layouts load."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from gnnseg.seg.sam.checkpoint import config_from_state_dict, load_sam, save_sam
from gnnseg.seg.sam.inference.model_input import lite_model_input, whole_image_input
from gnnseg.seg.sam.inference.predictor import SamPredictor
from gnnseg.seg.sam.modeling.sam import SAM_CONFIGS, build_sam
from gnnseg.seg.sam.modeling.tiny_vit import TinyViT, window_offset_index
from tests.seg.timm_tiny_vit import timm_tiny_vit_module, to_mobile_sam_keys


def _perturbed(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random parameters and batch-norm statistics, so that no zero-initialised part hides a difference."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
        for name, buffer in module.named_buffers():
            if name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5, generator=generator)
            elif name.endswith("running_mean"):
                buffer.normal_(0, 0.1, generator=generator)
    return module.eval()


@pytest.mark.parametrize("size", [224, 256])  # 256 leaves partial windows (32 and 16 are not multiples of 7)
def test_features_equal_timm_tiny_vit_with_the_same_weights(size):
    tiny_vit = timm_tiny_vit_module()
    torch.manual_seed(0)
    reference = _perturbed(tiny_vit.tiny_vit_5m_224(pretrained=False))
    ours = TinyViT(img_size=size, patch_size=32, merge_strides=(2, 2, 2)).eval()  # timm merges at stride 2 always
    missing, unexpected = ours.load_state_dict(to_mobile_sam_keys(reference.state_dict()), strict=False)
    assert unexpected == [] and all(key.startswith("neck.") for key in missing)
    image = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = reference.forward_features(image)
        actual = ours.features(image)
    assert actual.shape == expected.shape == (2, 320, size // 32, size // 32)
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def test_offset_index_follows_the_reference_enumeration():
    """The reference numbers offsets in order of first appearance over all token pairs, row-major."""
    window = 5
    points = list(itertools.product(range(window), range(window)))
    seen: dict[tuple[int, int], int] = {}
    expected = []
    for p, q in itertools.product(points, points):
        offset = (abs(p[0] - q[0]), abs(p[1] - q[1]))
        expected.append(seen.setdefault(offset, len(seen)))
    assert window_offset_index(window).reshape(-1).tolist() == expected


def test_lite_medsam_has_the_released_parameter_counts():
    model = build_sam("lite_medsam")
    def count(module):
        return sum(p.numel() for p in module.parameters())
    assert count(model.image_encoder) == 5_726_740
    assert count(model.prompt_encoder) == 6_220
    assert count(model.mask_decoder) == 4_058_340
    assert model.encode(torch.rand(1, 3, 256, 256)).shape == (1, 256, 64, 64)


@pytest.mark.parametrize("name", ["lite_medsam", "mobile_sam"])
def test_architecture_is_read_off_a_flat_state_dict(name):
    state = build_sam(name).state_dict()
    normalization = SAM_CONFIGS[name].normalization
    assert config_from_state_dict(state, normalization) == SAM_CONFIGS[name]


def test_a_flat_lite_medsam_file_loads_as_lite_medsam(tmp_path):
    source = _perturbed(build_sam("lite_medsam"))
    torch.save(source.state_dict(), tmp_path / "lite_medsam.pth")
    loaded, meta = load_sam(tmp_path / "lite_medsam.pth")
    assert loaded.config == SAM_CONFIGS["lite_medsam"] and meta["source_layout"] == "official"
    image = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(image), source.encode(image))


def test_lite_medsam_fast_runs_every_stage_on_the_embedding_grid():
    model = build_sam("lite_medsam_fast")
    encoder = model.image_encoder
    image = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        stem = encoder.patch_embed(image)
        assert stem.shape[-2:] == (64, 64)  # a stride-4 stem: no stage runs above the 64 x 64 grid
        x = stem
        for stage in encoder.layers:
            x = stage(x)
            assert x.shape[-2:] == (64, 64)
        assert model.encode(image).shape == (1, 256, 64, 64)
    lite = build_sam("lite_medsam")
    assert model.prompt_encoder.state_dict().keys() == lite.prompt_encoder.state_dict().keys()
    def count(module):
        return sum(p.numel() for p in module.parameters())
    assert count(model.image_encoder) < 0.5 * count(lite.image_encoder)


def test_merge_strides_travel_with_a_gnnseg_checkpoint(tmp_path):
    source = _perturbed(build_sam("lite_medsam_fast"))
    save_sam(source, tmp_path / "fast.pt")
    loaded, _ = load_sam(tmp_path / "fast.pt")
    assert loaded.config == SAM_CONFIGS["lite_medsam_fast"] and loaded.config.merge_strides == (1, 1, 1)
    image = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(image), source.encode(image))


def test_wrong_input_size_is_refused():
    with pytest.raises(ValueError, match="expects 64x64"):
        build_sam("tiny_vit_mini").encode(torch.rand(1, 3, 48, 48))
    with pytest.raises(ValueError, match="stem"):
        TinyViT(patch_size=8)
    with pytest.raises(ValueError, match="merge strides"):
        TinyViT(patch_size=4, merge_strides=(2, 2, 2))


def test_lite_predictor_uses_longest_side_padding_and_returns_image_sized_masks():
    model = _perturbed(build_sam("tiny_vit_mini"))
    image = (np.random.default_rng(0).random((40, 100, 3)) * 255).astype(np.uint8)
    pixels, hw = whole_image_input(image, 64, layout="padded", normalization="minmax")
    expected, expected_hw = lite_model_input(image, 64)
    np.testing.assert_array_equal(pixels, expected)
    assert hw == expected_hw == (26, 64)
    predictor = SamPredictor(model)
    predictor.set_image(image)
    torch.testing.assert_close(predictor._embedding, model.encode(torch.from_numpy(expected)))
    prediction = predictor.predict(boxes=np.array([[10, 5, 60, 30], [0, 0, 99, 39]]))
    assert prediction.masks.shape == (2, 1, 40, 100) and prediction.iou.shape == (2, 1)
