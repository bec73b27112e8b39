"""timm's TinyViT as an independent oracle for :mod:`gnnseg.seg.sam.modeling.tiny_vit`.

timm needs torchvision, whose PyPI build cannot load its compiled operators beside the CPU torch; torchvision only
needs the schemas of ``nms`` and ``qnms`` to exist to import, so they are declared (never called) before timm loads.
timm's TinyViT is the classification network: its stages start with the patch merging that MobileSAM keeps at the
end of the stage before, and it names convolutions ``conv`` where MobileSAM says ``c``. :func:`to_mobile_sam_keys`
maps one layout to the other.
"""

from __future__ import annotations

import re
import sys

import pytest
import torch


def timm_tiny_vit_module():
    """``timm.models.tiny_vit``, or skip when the test extra is not installed."""
    if "timm" not in sys.modules:
        try:
            import torchvision  # noqa: F401
        except RuntimeError:  # the compiled operators are missing: declare the two schemas it checks at import
            library = torch.library.Library("torchvision", "DEF")
            for name in ("nms", "qnms"):
                library.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            for module in [m for m in sys.modules if m.startswith("torchvision")]:
                del sys.modules[module]
            _LIBRARIES.append(library)  # a Library undefines its operators when it is garbage-collected
        except ImportError:
            pytest.skip("torchvision is not installed (pip install -e '.[test]')")
    try:
        from timm.models import tiny_vit
    except ImportError:
        pytest.skip("timm is not installed (pip install -e '.[test]')")
    return tiny_vit


_LIBRARIES: list = []


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
