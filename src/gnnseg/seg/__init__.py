"""Biomedical image segmentation: medical image I/O, metrics, U-Net."""
