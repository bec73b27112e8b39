"""Medical image I/O: NIfTI, MetaImage / NRRD, DICOM series and DICOM-SEG, 2D images, and the nnU-Net raw dataset
layout (with its label model), and conversions into it.

Names are loaded from their modules on first use: reading a PNG does not pay for importing nibabel and pydicom.
"""

from importlib import import_module

_HOMES = {
    "CONVERTERS": "converters", "convert_drive": "converters", "convert_isbi2012": "converters",
    "convert_kvasir": "converters", "read_dicom_files": "dicom", "read_dicom_headers": "dicom",
    "read_dicom_series": "dicom", "read_dicom_seg": "dicom_seg", "write_dicom_seg": "dicom_seg",
    "axis_codes": "geometry", "reorient": "geometry",
    "reorient_like": "geometry", "ImageFormatError": "image", "MedicalImage": "image", "read_image_2d": "image2d",
    "write_image_2d": "image2d", "read_nifti": "nifti", "write_nifti": "nifti", "Case": "raw_dataset",
    "RawDataset": "raw_dataset", "read_any": "any_format", "write_any": "any_format",
    "write_raw_dataset": "raw_dataset", "DatasetLabels": "dataset_labels", "convert_folder": "folder_conversion",
    "read_simpleitk": "simpleitk_io", "write_simpleitk": "simpleitk_io",
}

__all__ = [
    "CONVERTERS", "Case", "DatasetLabels", "ImageFormatError", "MedicalImage", "RawDataset", "axis_codes",
    "convert_drive", "convert_folder", "convert_isbi2012", "convert_kvasir", "read_any", "read_dicom_files",
    "read_dicom_headers", "read_dicom_seg", "read_dicom_series", "read_image_2d", "read_nifti", "read_simpleitk",
    "reorient", "reorient_like", "write_any", "write_dicom_seg", "write_image_2d", "write_nifti", "write_raw_dataset",
    "write_simpleitk",
]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'gnnseg.seg.io' has no attribute {name!r}")
    return getattr(import_module(f"gnnseg.seg.io.{_HOMES[name]}"), name)
