"""Our SAM against the official segment-anything code with the same random weights: same numbers within 1e-4."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnnseg.seg.sam.checkpoint import config_from_state_dict, export_official, load_sam
from gnnseg.seg.sam.inference.prediction import whole_image_masks
from gnnseg.seg.sam.modeling.sam import SAM_CONFIGS, SamConfig, build_sam
from tests.seg.official_sam import build_official

TOLERANCE = 1e-4


def randomized(config: SamConfig, seed: int = 0, amplitude: float = 0.3):
    """Our model with every parameter and buffer drawn at random (zero-initialised tables would test nothing)."""
    torch.manual_seed(seed)
    model = build_sam(config)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            noise = torch.empty_like(tensor).uniform_(-amplitude, amplitude)
            tensor.copy_(1 + noise if "norm" in name and name.endswith("weight") else noise)
    return model


def paired(config: SamConfig, amplitude: float = 0.3):
    ours = randomized(config, amplitude=amplitude)
    official = build_official(config)
    official.load_state_dict(ours.state_dict(), strict=True)
    return ours, official


def official_decode(official, embedding, points, boxes, masks, multimask):
    sparse, dense = official.prompt_encoder(points=points, boxes=boxes, masks=masks)
    return official.mask_decoder(image_embeddings=embedding, image_pe=official.prompt_encoder.get_dense_pe(),
                                 sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                 multimask_output=multimask)


# A non-square window grid (grid 12 with window 5 pads to 15) and both attention kinds.
PADDED_WINDOWS = SamConfig(image_size=96, patch_size=8, encoder_dim=48, encoder_depth=3, encoder_heads=3,
                           global_attention=(1,), window_size=5, prompt_dim=32, decoder_heads=8,
                           decoder_mlp_dim=64, iou_head_hidden=32)


@pytest.mark.parametrize("config", [SAM_CONFIGS["vit_mini"], PADDED_WINDOWS], ids=["mini", "padded-windows"])
def test_image_embeddings_match(config):
    ours, official = paired(config)
    image = torch.randn(2, 3, config.image_size, config.image_size)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(image), official.image_encoder(image), atol=TOLERANCE, rtol=0)


PROMPTS = ["box", "points", "box+points", "box+mask", "box+points+mask"]


@pytest.mark.parametrize("multimask", [False, True])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_masks_logits_and_iou_match(prompt, multimask):
    config = PADDED_WINDOWS
    ours, official = paired(config)
    size = config.image_size
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        embedding = ours.encode(torch.randn(1, 3, size, size, generator=generator))
        count = 3
        boxes = points = masks = None
        if "box" in prompt:
            corner = torch.rand(count, 2, generator=generator) * size / 2
            boxes = torch.cat([corner, corner + 10 + torch.rand(count, 2, generator=generator) * size / 2], dim=1)
        if "points" in prompt:
            points = (torch.rand(count, 2, 2, generator=generator) * size, torch.tensor([[1, 0]] * count))
        if "mask" in prompt:
            grid = 4 * config.embedding_size
            masks = torch.randn(count, 1, grid, grid, generator=generator)
        low_ours, iou_ours = ours.decode(embedding, points=points, boxes=boxes, mask_inputs=masks,
                                         multimask=multimask)
        low_ref, iou_ref = official_decode(official, embedding, points, boxes, masks, multimask)
        torch.testing.assert_close(low_ours, low_ref, atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(iou_ours, iou_ref, atol=TOLERANCE, rtol=0)
        original = (70, 90)
        input_hw = (size, size)
        logits_ours, masks_ours = whole_image_masks(low_ours.numpy(), "padded", size, input_hw, original)
        logits_ref = official.postprocess_masks(low_ref, input_hw, original).numpy()
        assert masks_ours.shape == (count, 3 if multimask else 1, *original)
        np.testing.assert_allclose(logits_ours, logits_ref, atol=TOLERANCE, rtol=0)
        decided = np.abs(logits_ref) > TOLERANCE
        np.testing.assert_array_equal(masks_ours[decided], (logits_ref > official.mask_threshold)[decided])


@pytest.mark.slow
def test_vit_b_architecture_matches_at_reduced_input():
    """ViT-B's real depth, width, heads and global blocks (input 256 instead of 1024 to keep the test quick)."""
    config = SamConfig(image_size=256)
    ours, official = paired(config, amplitude=0.05)  # weights of a trained model's scale keep 12 blocks finite
    image = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(image), official.image_encoder(image), atol=TOLERANCE, rtol=0)
    assert sum(p.numel() for p in build_sam("vit_b").parameters()) == 93_735_472  # SAM ViT-B, counted in ANCHORS


def test_official_layout_round_trip(tmp_path):
    """Export to the flat official layout, load it in the official model and back in ours; infer the config."""
    ours = randomized(PADDED_WINDOWS)
    path = export_official(ours, tmp_path / "sam_flat.pth")
    state = torch.load(path, weights_only=True)
    official = build_official(PADDED_WINDOWS)
    official.load_state_dict(state, strict=True)
    inferred = config_from_state_dict(state)
    assert inferred == PADDED_WINDOWS
    reloaded, meta = load_sam(path, normalization="imagenet")
    assert meta["source_layout"] == "official"
    image = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.encode(image), official.image_encoder(image), atol=TOLERANCE, rtol=0)
