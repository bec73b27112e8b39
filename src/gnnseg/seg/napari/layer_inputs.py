"""napari layers as what a session takes: an image layer as the pixels a model segments, a rectangle as a box, a point
as a click, each in the image layer's voxel indices.

Every refusal is a :class:`LayerInputError` whose one sentence names the layer, the shape and what to do, raised
before anything is sent to a model or changed in the viewer. Coordinates go from the prompt layer's data to the
world and back into the image layer's data (``data_to_world`` / ``world_to_data``), so a prompt layer with another
scale or offset still lands on the right voxels. napari orders axes as gnnseg does, slowest first: ``(z, y, x)``;
boxes and clicks are then written ``x, y`` as the sessions take them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gnnseg.seg.io.intensity import CT_WINDOWS, VOLUME_MODALITIES, scale_volume, to_rgb_uint8


class LayerInputError(ValueError):
    """A layer that cannot be segmented or a prompt that cannot be read: the message says which and why."""


@dataclass(frozen=True)
class ImageTarget:
    """The pixels of one image layer as a session takes them.

    ``pixels``: ``(H, W, 3)`` uint8 for a 2D image (grey or RGB), ``(D, H, W)`` uint8 for a volume.
    """

    name: str
    pixels: np.ndarray
    is_volume: bool

    @property
    def shape(self) -> tuple[int, ...]:
        """The spatial shape: ``(H, W)`` or ``(D, H, W)``; a Labels layer of the objects has this shape."""
        return tuple(self.pixels.shape[:3] if self.is_volume else self.pixels.shape[:2])


SUPPORTED = "a 2D image (H, W), an RGB image (H, W, 3) or a volume (D, H, W)"


def image_target(layer, modality: str = "auto", window: str = "soft_tissue") -> ImageTarget:
    """What the model segments of the image ``layer``: a 2D image as RGB uint8, a volume as uint8 slices.

    A volume that is already uint8 (a challenge case, values 0..255) is taken as it is; any other volume is scaled as
    every gnnseg command scales it (:func:`~gnnseg.seg.io.intensity.scale_volume`: CT through ``window``, MR clipped
    to percentiles, ``auto`` decides by the values).
    """
    data = np.asarray(layer.data)
    name = layer.name
    if getattr(layer, "multiscale", False):
        raise LayerInputError(f"layer {name!r} is multiscale: gnnseg segments one resolution; open it as one array")
    if layer.rgb:
        if data.ndim != 3:
            raise LayerInputError(f"layer {name!r} is an RGB stack of shape {data.shape}: gnnseg segments "
                                  f"{SUPPORTED}; 3D boxes need a grey volume, not RGB")
        return ImageTarget(name, to_rgb_uint8(data), False)
    if data.ndim == 2:
        return ImageTarget(name, to_rgb_uint8(data), False)
    if data.ndim != 3:
        raise LayerInputError(f"layer {name!r} has {data.ndim} dimensions (shape {data.shape}): gnnseg segments "
                              f"{SUPPORTED}; pick one channel or time point first (Layers > Split Stack)")
    if data.shape[-1] in (3, 4):
        raise LayerInputError(f"layer {name!r} of shape {data.shape} looks like an RGB image that napari did not open "
                              "as RGB, not a volume: set the layer's rgb to True (or open it as RGB)")
    if min(data.shape) == 0:
        raise LayerInputError(f"layer {name!r} is empty (shape {data.shape})")
    if modality not in VOLUME_MODALITIES:
        raise LayerInputError(f"modality must be one of {VOLUME_MODALITIES}, got {modality!r}")
    if window not in CT_WINDOWS:
        raise LayerInputError(f"CT window must be one of {sorted(CT_WINDOWS)}, got {window!r}")
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise LayerInputError(f"layer {name!r} holds NaN or infinite values")
    pixels = data if data.dtype == np.uint8 else scale_volume(data, modality, window)
    return ImageTarget(name, np.ascontiguousarray(pixels), True)


def _in_image_data(image_layer, prompt_layer, coordinates: np.ndarray, what: str) -> np.ndarray:
    """``(N, ndim)`` coordinates of ``prompt_layer``'s data as ``(N, D)`` image data coordinates (``D`` spatial
    axes of ``image_layer``)."""
    spatial = image_layer.ndim
    if prompt_layer.ndim != spatial:
        kind = "a volume" if spatial == 3 else "a 2D image"
        raise LayerInputError(f"{what} in layer {prompt_layer.name!r} has {prompt_layer.ndim} coordinates but "
                              f"{image_layer.name!r} is {kind} ({spatial} axes): draw it in a {spatial}D layer "
                              "over that image (the widget's own prompt layers are)")
    return np.array([image_layer.world_to_data(prompt_layer.data_to_world(point)) for point in coordinates],
                    dtype=np.float64)


def rectangle_box(image_layer, shapes_layer, index: int, slices_either_side: int = 0) -> np.ndarray:
    """Shape ``index`` of ``shapes_layer`` as a box over ``image_layer``: ``(4,)`` ``x0, y0, x1, y1`` on a 2D image,
    ``(6,)`` ``x_min, y_min, z_min, x_max, y_max, z_max`` on a volume, the rectangle's slice
    +- ``slices_either_side`` (the session clips the slices to the volume)."""
    kind = shapes_layer.shape_type[index]
    if kind != "rectangle":
        raise LayerInputError(f"shape {index} of layer {shapes_layer.name!r} is a {kind}: gnnseg takes rectangles "
                              "as boxes; draw it with the rectangle tool")
    corners = _in_image_data(image_layer, shapes_layer, np.asarray(shapes_layer.data[index]), "the rectangle")
    low, high = corners.min(axis=0), corners.max(axis=0)
    if image_layer.ndim == 2:
        return np.array([low[1], low[0], high[1], high[0]])
    if high[0] - low[0] > 0.5:
        raise LayerInputError(f"shape {index} of layer {shapes_layer.name!r} spans slices {low[0]:g}..{high[0]:g}: "
                              "draw the rectangle on one slice (the widget's 'slices either side' gives its depth)")
    z = int(round(low[0]))
    return np.array([low[2], low[1], z - slices_either_side, high[2], high[1], z + slices_either_side])


def click_position(image_layer, points_layer, index: int) -> tuple[float, float, int | None]:
    """Point ``index`` of ``points_layer`` as a click on ``image_layer``: ``x, y`` (voxel indices) and the slice
    (``None`` on a 2D image)."""
    (position,) = _in_image_data(image_layer, points_layer, np.asarray(points_layer.data[index])[None], "the click")
    if image_layer.ndim == 2:
        return float(position[1]), float(position[0]), None
    return float(position[2]), float(position[1]), int(round(position[0]))
