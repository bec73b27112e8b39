"""U-Net for 2D and 3D segmentation in nnU-Net v2's plain-convolution form, with the original paper's preset.

Names are loaded on first use, so that the torch-free modules of this package (plans, preprocessing, the ONNX
predictor) can be imported without importing torch through it.
"""

from importlib import import_module

__all__ = ["ConvBlock", "Norm", "UNet", "features_per_stage", "init_weights_he", "ronneberger_unet"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module 'gnnseg.seg.unet' has no attribute {name!r}")
    return getattr(import_module("gnnseg.seg.unet.network"), name)
