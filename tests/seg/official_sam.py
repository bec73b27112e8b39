"""The official ``segment-anything`` modules as a test oracle, imported without its torchvision-bound ``__init__``.

``segment_anything/__init__.py`` imports the automatic mask generator, which needs torchvision; the modeling
subpackage does not. Registering an empty parent package lets ``segment_anything.modeling`` import on its own.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from functools import partial

import pytest
import torch

from gnnseg.seg.sam.modeling.sam import SamConfig


def official_modeling():
    """``segment_anything.modeling``, or skip when the test extra is not installed."""
    if "segment_anything" not in sys.modules:
        spec = importlib.util.find_spec("segment_anything")
        if spec is None or not spec.submodule_search_locations:
            pytest.skip("segment-anything is not installed (pip install -e '.[test]')")
        parent = types.ModuleType("segment_anything")
        parent.__path__ = list(spec.submodule_search_locations)
        sys.modules["segment_anything"] = parent
    return importlib.import_module("segment_anything.modeling")


def build_official(config: SamConfig):
    """The official ``Sam`` with the architecture of ``config`` (its ``_build_sam`` with our numbers)."""
    modeling = official_modeling()
    grid = config.embedding_size
    return modeling.Sam(
        image_encoder=modeling.ImageEncoderViT(
            depth=config.encoder_depth, embed_dim=config.encoder_dim, img_size=config.image_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=config.encoder_heads,
            patch_size=config.patch_size, qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=config.global_attention, window_size=config.window_size,
            out_chans=config.prompt_dim,
        ),
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=config.prompt_dim, image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size), mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=modeling.MaskDecoder(
            num_multimask_outputs=3,
            transformer=modeling.TwoWayTransformer(depth=config.decoder_depth, embedding_dim=config.prompt_dim,
                                                   mlp_dim=config.decoder_mlp_dim, num_heads=config.decoder_heads),
            transformer_dim=config.prompt_dim, iou_head_depth=3, iou_head_hidden_dim=config.iou_head_hidden,
        ),
    ).eval()
