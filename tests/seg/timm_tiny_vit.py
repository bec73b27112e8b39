"""timm's TinyViT as an independent oracle for :mod:`gnnseg.seg.sam.modeling.tiny_vit`.

timm needs torchvision, made importable beside the CPU torch first (:mod:`tests.seg.torchvision_schemas`).
timm's TinyViT is the classification network: its stages start with the patch merging that MobileSAM keeps at the
end of the stage before, and it names convolutions ``conv`` where MobileSAM says ``c``. :func:`to_mobile_sam_keys`
maps one layout to the other.
"""

from __future__ import annotations

import re
import sys

import pytest
import torch

from tests.seg.torchvision_schemas import make_torchvision_importable


def timm_tiny_vit_module():
    """``timm.models.tiny_vit``, or skip when the test extra is not installed."""
    if "timm" not in sys.modules and not make_torchvision_importable():
        pytest.skip("torchvision is not installed (pip install -e '.[test]')")
    try:
        from timm.models import tiny_vit
    except ImportError:
        pytest.skip("timm is not installed (pip install -e '.[test]')")
    return tiny_vit


def to_mobile_sam_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm TinyViT keys -> MobileSAM / Lite MedSAM ``image_encoder`` keys (the classifier head is dropped)."""
    renamed = {}
    for key, value in state.items():
        if key.startswith("head"):
            continue
        key = re.sub(r"^patch_embed\.conv1\.", "patch_embed.seq.0.", key)
        key = re.sub(r"^patch_embed\.conv2\.", "patch_embed.seq.2.", key)
        if match := re.match(r"stages\.(\d+)\.downsample\.(.*)", key):
            key = f"layers.{int(match.group(1)) - 1}.downsample.{match.group(2)}"
        key = key.replace("stages.", "layers.").replace(".conv.", ".c.")
        renamed[key] = value
    return renamed
