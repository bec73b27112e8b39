"""U-Net for 2D and 3D segmentation in nnU-Net v2's plain-convolution form, with the original paper's preset."""

from gnnseg.seg.unet.network import ConvBlock, Norm, UNet, features_per_stage, init_weights_he, ronneberger_unet

__all__ = ["ConvBlock", "Norm", "UNet", "features_per_stage", "init_weights_he", "ronneberger_unet"]
