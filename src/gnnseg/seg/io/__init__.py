"""Medical image I/O: NIfTI, DICOM series, 2D images, and the nnU-Net raw dataset layout."""

from gnnseg.seg.io.converters import CONVERTERS, convert_drive, convert_isbi2012, convert_kvasir
from gnnseg.seg.io.dicom import read_dicom_series
from gnnseg.seg.io.geometry import axis_codes, reorient, reorient_like
from gnnseg.seg.io.image import ImageFormatError, MedicalImage
from gnnseg.seg.io.image2d import read_image_2d, write_image_2d
from gnnseg.seg.io.nifti import read_nifti, write_nifti
from gnnseg.seg.io.raw_dataset import Case, RawDataset, read_any, write_raw_dataset

__all__ = [
    "CONVERTERS", "Case", "ImageFormatError", "MedicalImage", "RawDataset", "axis_codes", "convert_drive",
    "convert_isbi2012", "convert_kvasir", "read_any", "read_dicom_series", "read_image_2d", "read_nifti", "reorient",
    "reorient_like",
    "write_image_2d", "write_nifti", "write_raw_dataset",
]
