"""DICOM Segmentation objects (DICOM-SEG): a label map written as segments that reference its source series, and
read back onto that series' grid.

A DICOM-SEG is how a segmentation goes back to where the images came from: a PACS stores it beside the series, and
3D Slicer, OHIF and other viewers overlay it on the series it references by UID. :func:`write_dicom_seg` writes
one segment per label value present, with the label's name, a recommended display colour and the algorithm that
made it; :func:`read_dicom_seg` turns a DICOM-SEG back into a label map on the source series, after checking that
it belongs to that series.

Choices, and why:

- **BINARY segments** (one bit a pixel, one frame per segment and slice, frames without any segment omitted),
  not the newer LABELMAP type: BINARY is the form every reader understands (Slicer's dcmqi, OHIF, dcm4che, PACS
  viewers), LABELMAP only recent ones. Segments from one label map never overlap, so nothing is lost. Frames
  are stored uncompressed (explicit VR little endian; about 32 KB a 512 x 512 frame): BINARY allows only that or
  JPEG 2000, which fewer viewers decode.
- **Generic property codes**: every segment is SNOMED "Tissue" (category and type); its meaning is in its label
  (e.g. TotalSegmentator's organ names), since gnnseg holds no mapping from label names to SNOMED concepts.
- **Frames follow gnnseg's slice order**: the series is sorted along the slice normal (as
  :func:`~gnnseg.seg.io.dicom.read_dicom_series` reads it, never by file name), so frame ``z`` of the label map
  references the SOPInstanceUID of the slice at ``z`` and carries its position.
- **Label values survive**: DICOM numbers segments 1, 2, 3, ...; each segment's algorithm parameters record the
  label value it holds (``label value=5``), so a round trip gives back the same values (a DICOM-SEG from
  elsewhere, without them, reads as its segment numbers).
- **Empty label maps are refused**: a DICOM-SEG holds at least one segment, and one with nothing segmented would
  look in a viewer like a failed load.
- **Sources must carry their UIDs**: an anonymised series stripped of its Study, Series or SOP Instance UIDs cannot
  be referenced, and a DICOM-SEG pointing at empty UIDs would attach to nothing; it is refused by name.

highdicom is imported only here, and only when a DICOM-SEG is written or read (the ``dicom`` extra).
"""

from __future__ import annotations

import colorsys
import importlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from gnnseg.core.atomic import atomic_path
from gnnseg.seg.io.image import ImageFormatError, MedicalImage, check_is_file

if TYPE_CHECKING:
    import pydicom

HIGHDICOM_INSTALL_HINT = "pip install 'gnnseg[dicom]' (or pip install highdicom)"
DICOM_SEG_SUFFIX = ".dcm"
REFERENCED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "FrameOfReferenceUID")
"""The UIDs of every source slice that a DICOM-SEG references."""
LABEL_VALUE_PARAMETER = "label value"
SEG_SERIES_NUMBER = 1000
"""The series number of the DICOM-SEG series (listed after the image series in most viewers)."""
MAX_LO_LENGTH = 64
"""DICOM's limit on a long string (segment labels, algorithm names)."""

SeriesSource = str | os.PathLike | Sequence["pydicom.Dataset"]
"""A DICOM series: its folder, or its slices' datasets (headers suffice, pixel data is never needed) in any order."""


def require_highdicom() -> ModuleType:
    """The highdicom package, or a one-line ImportError saying how to install it."""
    try:
        return importlib.import_module("highdicom")
    except ImportError as exc:
        raise ImportError(f"DICOM-SEG needs the highdicom package: {HIGHDICOM_INSTALL_HINT}") from exc


def is_dicom_seg_path(path: str | os.PathLike) -> bool:
    """Whether an output path asks for a DICOM-SEG (it ends in ``.dcm``)."""
    return Path(path).name.lower().endswith(DICOM_SEG_SUFFIX)


def refuse_non_dicom_source(source: str | os.PathLike, output: str | os.PathLike) -> None:
    """Refuse a ``.dcm`` output for an input that is not a DICOM series folder (a PNG, a NIfTI file, an npz case):
    a DICOM-SEG must reference the DICOM images it segments."""
    if not Path(source).is_dir():
        raise ValueError(f"{output}: a .dcm output is a DICOM-SEG, which references the DICOM series it segments; "
                         f"{source} is not a DICOM series folder (write .nii.gz or .png instead)")


def dicom_seg_source(source: SeriesSource) -> list[pydicom.Dataset]:
    """The source series' slice headers in volume order (along the slice normal, as gnnseg reads the series), each
    holding the UIDs a DICOM-SEG references; anything else is refused with one message.

    Cheap (headers only): callers check a source with it before running a model.
    """
    from gnnseg.seg.io.dicom import ordered_slice_headers, read_dicom_headers

    if isinstance(source, (str, os.PathLike)):
        name = str(source)
        if not Path(source).is_dir():
            raise ImageFormatError(f"{name}: a DICOM-SEG references a DICOM series; give the folder of its slices")
        try:
            named = read_dicom_headers(source)
        except ImageFormatError as exc:
            raise ImageFormatError(f"a DICOM-SEG needs a DICOM series as its source: {exc}") from None
    else:
        name = "the given DICOM datasets"
        named = ordered_slice_headers([(f"dataset {k}", dataset) for k, dataset in enumerate(source)], name)
    _check_referenceable(named, name)
    return [dataset for _, dataset in named]


def _check_referenceable(named: Sequence[tuple[str, pydicom.Dataset]], source: str) -> None:
    """Refuse slices without the UIDs a reference needs, or slices of several frames of reference."""
    lacking = {key: [file for file, dataset in named if not str(getattr(dataset, key, "") or "")]
               for key in REFERENCED_UIDS}
    lacking = {key: files for key, files in lacking.items() if files}
    if lacking:
        listed = ", ".join(f"{key} ({len(files)} of {len(named)} slices)" for key, files in lacking.items())
        example = next(iter(lacking.values()))[0]
        raise ImageFormatError(f"{source}: the series lacks {listed}, e.g. {example} (anonymised with its UIDs "
                               "removed?); a DICOM-SEG references its source images by these UIDs, so it cannot be "
                               "written for this series")
    frames = {str(dataset.FrameOfReferenceUID) for _, dataset in named}
    if len(frames) > 1:
        raise ImageFormatError(f"{source}: slices lie in {len(frames)} frames of reference ({sorted(frames)})")


def segment_color(label: int) -> tuple[int, int, int]:
    """A recommended display colour (RGB) for label value ``label``: hues a golden angle apart, so neighbouring
    labels differ clearly and a label keeps its colour in every file."""
    hue = (0.08 + 0.618033988749895 * label) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return round(red * 255), round(green * 255), round(blue * 255)


def build_dicom_seg(labels: np.ndarray, source: SeriesSource, *, label_names: Mapping[int, str] | None = None,
                    model: str = "", algorithm_type: str = "AUTOMATIC"):
    """The DICOM-SEG (a ``highdicom.seg.Segmentation``, itself a pydicom Dataset) of a ``(z, y, x)`` label map on
    the grid of the series ``source``.

    One BINARY segment per label value present, in increasing order, labelled by ``label_names[value]`` (e.g.
    TotalSegmentator's organ names) or ``"label <value>"``, coloured by :func:`segment_color`, identified as made by
    gnnseg and ``model`` with ``algorithm_type`` (``AUTOMATIC``, or ``SEMIAUTOMATIC`` for prompted models). New
    Series and SOP Instance UIDs; the patient and study are the source's.
    """
    hd = require_highdicom()
    from importlib.metadata import PackageNotFoundError, version

    from pydicom.sr.codedict import codes

    headers = dicom_seg_source(source)
    labels = np.asarray(labels)
    expected = (len(headers), int(headers[0].Rows), int(headers[0].Columns))
    if labels.shape != expected:
        raise ValueError(f"the label map has shape {labels.shape}, the series {expected} (slices, rows, columns): "
                         "labels for a DICOM-SEG must lie on the source series' grid")
    if labels.dtype.kind not in "biu" or (labels.dtype.kind == "i" and labels.min(initial=0) < 0):
        raise ValueError(f"labels must be non-negative integers, got {labels.dtype} values")
    values = [int(v) for v in np.unique(labels) if v]
    if not values:
        raise ValueError("the label map is empty (every voxel 0): nothing was segmented, and a DICOM-SEG holds at "
                         "least one segment; nothing was written")
    try:
        gnnseg_version = version("gnnseg")
    except PackageNotFoundError:
        gnnseg_version = "unknown"
    names = dict(label_names or {})
    algorithm_name = " ".join(("gnnseg", Path(model).name if model else "")).strip()[:MAX_LO_LENGTH]
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number, segment_label=str(names.get(value) or f"label {value}")[:MAX_LO_LENGTH],
            segmented_property_category=codes.SCT.Tissue, segmented_property_type=codes.SCT.Tissue,
            algorithm_type=algorithm_type,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name=algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=gnnseg_version,
                source="gnnseg", parameters={LABEL_VALUE_PARAMETER: str(value)}),
            display_color=hd.color.CIELabColor.from_rgb(*segment_color(value)))
        for number, value in enumerate(values, start=1)]
    segment_numbers = np.zeros(max(values) + 1, dtype=np.uint16)
    segment_numbers[values] = np.arange(1, len(values) + 1)
    segmentation = hd.seg.Segmentation(
        source_images=headers, pixel_array=segment_numbers[labels], segmentation_type="BINARY",
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="gnnseg",
        manufacturer_model_name=algorithm_name, software_versions=gnnseg_version, device_serial_number="none",
        content_label="GNNSEG", content_description=f"{algorithm_name} segmentation"[:MAX_LO_LENGTH])
    segmentation.SeriesDescription = f"{algorithm_name} segmentation"[:MAX_LO_LENGTH]
    return segmentation


def write_dicom_seg(labels: np.ndarray, source: SeriesSource, path: str | os.PathLike, *,
                    label_names: Mapping[int, str] | None = None, model: str = "",
                    algorithm_type: str = "AUTOMATIC") -> Path:
    """Write :func:`build_dicom_seg` to ``path``, all or nothing, never over an existing file.

    ``labels``: ``(z, y, x)`` label values on the grid of the series ``source`` (its folder, or its slices'
    datasets in any order), slice ``z`` being the ``z``-th along the slice normal as gnnseg reads the series.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; choose another output path")
    segmentation = build_dicom_seg(labels, source, label_names=label_names, model=model,
                                   algorithm_type=algorithm_type)
    with atomic_path(path) as temporary:
        segmentation.save_as(temporary)
    return path


@dataclass(frozen=True)
class DicomSegLabels:
    """A DICOM-SEG read back: ``image`` holds the ``(z, y, x)`` uint16 label map on the source series' grid (its
    spacing and RAS affine); ``names`` maps each label value to its segment's label."""

    image: MedicalImage
    names: dict[int, str]


def read_dicom_seg(path: str | os.PathLike, source: SeriesSource) -> DicomSegLabels:
    """The label map of the DICOM-SEG ``path`` on the grid of the series ``source`` it was made on.

    Refused with one message naming the mismatch: a file that is not a readable DICOM Segmentation (truncated, its
    frames missing), a different frame of reference or series than ``source``'s, references to slices the series
    lacks, a different slice size, or segments that overlap (a label map cannot hold them).
    """
    hd = require_highdicom()
    from gnnseg.seg.io.dicom import series_geometry

    path = check_is_file(path, "DICOM-SEG")
    headers = dicom_seg_source(source)
    try:
        segmentation = hd.seg.segread(path)
    except Exception as exc:
        raise ImageFormatError(f"{path} is not a readable DICOM Segmentation ({exc or type(exc).__name__})") from None
    source_name = str(source) if isinstance(source, (str, os.PathLike)) else "the given series"
    _check_belongs_to(segmentation, headers, path, source_name)
    _check_frames_complete(segmentation, path)
    instance_uids = [str(dataset.SOPInstanceUID) for dataset in headers]
    try:
        numbers = segmentation.get_pixels_by_source_instance(instance_uids, combine_segments=True,
                                                            assert_missing_frames_are_empty=True, dtype=np.uint16)
    except Exception as exc:
        raise ImageFormatError(f"{path}: its frames cannot be placed on {source_name} "
                               f"({exc or type(exc).__name__})") from None
    values = _label_values(segmentation, path)
    lookup = np.zeros(max(values) + 1, dtype=np.uint16)
    lookup[list(values)] = list(values.values())
    names = {values[number]: str(segmentation.get_segment_description(number).segment_label) for number in values}
    spacing, affine = series_geometry(headers)
    image = MedicalImage(lookup[numbers], spacing, affine, source=str(path),
                         metadata={"series_uid": str(headers[0].SeriesInstanceUID),
                                   "sop_instance_uid": str(segmentation.SOPInstanceUID)})
    return DicomSegLabels(image, names)


def _check_belongs_to(segmentation, headers: Sequence[pydicom.Dataset], path: Path, source: str) -> None:
    """Refuse a DICOM-SEG made on another frame of reference, another series, or slices the series lacks."""
    frame = str(headers[0].FrameOfReferenceUID)
    if str(getattr(segmentation, "FrameOfReferenceUID", "")) != frame:
        raise ImageFormatError(f"{path} lies in frame of reference {getattr(segmentation, 'FrameOfReferenceUID', '')}"
                               f", {source} in {frame}: the segmentation was not made on this series")
    series = str(headers[0].SeriesInstanceUID)
    referenced_series = {str(item.SeriesInstanceUID) for item in getattr(segmentation, "ReferencedSeriesSequence", [])}
    if series not in referenced_series:
        raise ImageFormatError(f"{path} references series {sorted(referenced_series)}, not {source}'s {series}: the "
                               "segmentation was not made on this series")
    present = {str(dataset.SOPInstanceUID) for dataset in headers}
    absent = sorted({uid for _, _, uid in segmentation.get_source_image_uids()} - present)
    if absent:
        raise ImageFormatError(f"{path} references {len(absent)} slice(s) that {source} lacks (e.g. SOPInstanceUID "
                               f"{absent[0]}): the series is incomplete, or not the one segmented")
    size = (int(segmentation.Rows), int(segmentation.Columns))
    if size != (int(headers[0].Rows), int(headers[0].Columns)):
        raise ImageFormatError(f"{path} has frames of {size[0]} x {size[1]} pixels, {source} slices of "
                               f"{int(headers[0].Rows)} x {int(headers[0].Columns)}")


def _check_frames_complete(segmentation, path: Path) -> None:
    """Refuse a DICOM-SEG whose pixel data holds fewer frames than it declares (a truncated file); compressed
    frames are checked as they are decoded."""
    if "PixelData" not in segmentation:
        raise ImageFormatError(f"{path} holds no pixel data: its frames are missing (a truncated file?)")
    if segmentation.file_meta.TransferSyntaxUID.is_compressed:
        return
    frames = int(getattr(segmentation, "NumberOfFrames", 1) or 1)
    bits = frames * int(segmentation.Rows) * int(segmentation.Columns) * int(segmentation.BitsAllocated)
    held = len(segmentation.PixelData) * 8
    if held < bits:
        raise ImageFormatError(f"{path} declares {frames} frames but holds the pixels of {held * frames // bits}: its "
                               "frames are missing (a truncated file?)")


def _label_values(segmentation, path: Path) -> dict[int, int]:
    """Segment number -> label value: the value gnnseg recorded in each segment's algorithm parameters, else the
    segment number itself."""
    values = {}
    for number in segmentation.segment_numbers:
        identification = segmentation.get_segment_description(number).algorithm_identification
        try:
            parameters = (identification.parameters if identification is not None else None) or {}
        except ValueError:  # parameters written by another tool in another form
            parameters = {}
        given = parameters.get(LABEL_VALUE_PARAMETER, str(number))
        if not given.isdigit() or not 0 < int(given) < 2**16:
            raise ImageFormatError(f"{path}: segment {number} records the label value {given!r}, not a label")
        values[int(number)] = int(given)
    if len(set(values.values())) != len(values):
        raise ImageFormatError(f"{path}: two segments record the same label value ({values})")
    return values
