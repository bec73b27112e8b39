"""torchvision beside the CPU torch, for the test oracles that import it (timm, transformers, nnunetv2).

torchvision's PyPI build cannot load its compiled operators beside the CPU torch; on import it only checks that the
schemas of ``nms`` and ``qnms`` exist, so they are declared here (never called) and torchvision imports.
"""

from __future__ import annotations

import sys

import torch

_LIBRARIES: list = []   # a Library undefines its operators when it is garbage-collected


def make_torchvision_importable() -> bool:
    """Whether torchvision can be imported (declaring the two schemas where its operators are missing); False when
    it is not installed."""
    if "torchvision" in sys.modules:
        return True
    try:
        import torchvision  # noqa: F401
    except RuntimeError:  # the compiled operators are missing: declare the two schemas it checks at import
        library = torch.library.Library("torchvision", "DEF")
        for name in ("nms", "qnms"):
            library.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        for module in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[module]
        _LIBRARIES.append(library)
    except ImportError:
        return False
    return True
