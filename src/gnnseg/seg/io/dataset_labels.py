"""The labels of an nnU-Net v2 ``dataset.json``: plain labels, regions, the ignore label, checked as nnU-Net's
``LabelManager`` checks them, in one place for every reader (raw datasets, gnnseg plans, nnU-Net models, scoring).

``labels`` maps names to a label value (``"liver": 1``) or, for region-based datasets, to a list of values whose union
is one region (``"whole_tumor": [1, 2, 3]``); any list of more than one value makes the dataset region-based, and then
``regions_class_order`` (one label value per region, the value painted where that region is predicted) is required.
``"ignore": N`` marks voxels that no loss or score counts; it must be one integer, one above every other label value,
and no region may name it. A region-based network has one sigmoid output per foreground region; otherwise one softmax
output per label value (background included). No numpy, no torch: the ONNX predictor reads it too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LabelOrRegion = int | tuple[int, ...]
"""A label value, or a region: the tuple of label values whose union it is."""


def _as_value(value: Any, where: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise ValueError(f"{where}: label {name!r} has value {value!r}, not an integer")
    return int(value)


@dataclass(frozen=True)
class DatasetLabels:
    """A dataset's labels as its network is trained on them.

    ``names``: each name with its label value or region, in the file's order (background first, ``ignore`` left out);
    ``regions_class_order``: for region-based datasets the label painted for each foreground region;
    ``ignore_label``: the value no loss or score counts (``None``: none)."""

    names: Mapping[str, LabelOrRegion]
    regions_class_order: tuple[int, ...] | None = None
    ignore_label: int | None = None

    @classmethod
    def from_json(cls, labels: Any, regions_class_order: Any = None, *, where: str = "dataset.json"
                  ) -> DatasetLabels:
        """The ``labels`` object of a ``dataset.json`` (and its ``regions_class_order``), checked: background 0,
        integer values, no value named twice, regions over declared labels with one ``regions_class_order`` entry
        each, an integer ignore label one above the highest label and in no region. ``where`` names the file in the
        one-line error."""
        if not isinstance(labels, Mapping) or not labels:
            raise ValueError(f"{where}: 'labels' must be an object of names and values, got {labels!r}")
        if "background" not in labels:
            raise ValueError(f"{where}: labels lack 'background' (it must be label 0)")
        background = labels["background"]
        if isinstance(background, list | tuple) or isinstance(background, bool) or background != 0:
            raise ValueError(f"{where}: label 'background' must be 0, got {background!r}")
        ignore = labels.get("ignore")
        if ignore is not None and (isinstance(ignore, bool) or not isinstance(ignore, int)):
            raise ValueError(f"{where}: the ignore label must be one integer, got {ignore!r}")
        names: dict[str, LabelOrRegion] = {}
        plain: dict[int, str] = {}
        for name, value in labels.items():
            if name == "ignore":
                continue
            if isinstance(value, list | tuple):
                if not value:
                    raise ValueError(f"{where}: region {name!r} lists no label values")
                members = tuple(_as_value(v, where, name) for v in value)
                if len(set(members)) != len(members):
                    raise ValueError(f"{where}: region {name!r} names a label value twice: {list(members)}")
                names[name] = members if len(members) > 1 else members[0]
            else:
                names[name] = _as_value(value, where, name)
            if isinstance(names[name], int):
                value_ = names[name]
                if value_ in plain:
                    raise ValueError(f"{where}: labels {plain[value_]!r} and {name!r} both have value {value_}")
                plain[value_] = name
        if regions_class_order is not None and not isinstance(regions_class_order, list | tuple):
            raise ValueError(f"{where}: regions_class_order must be a list of label values, got "
                             f"{regions_class_order!r}")
        result = cls(names=names, ignore_label=ignore,
                     regions_class_order=None if regions_class_order is None else
                     tuple(_as_value(v, where, "regions_class_order") for v in regions_class_order))
        result._check(where)
        return result

    def _check(self, where: str) -> None:
        values = self.all_labels
        if values == [0]:
            raise ValueError(f"{where}: labels name background only; a dataset needs at least one foreground label")
        if any(v < 0 for v in values):
            raise ValueError(f"{where}: label values must be >= 0, got {values}")
        named = [v for v in self.names.values() if isinstance(v, int) and v != 0]
        for name, member in self.names.items():
            if isinstance(member, tuple):
                if self.ignore_label is not None and self.ignore_label in member:
                    raise ValueError(f"{where}: region {name!r} names the ignore label {self.ignore_label}")
                beyond = [v for v in member if v == 0 or (named and v > max(named))]
                if beyond:
                    raise ValueError(f"{where}: region {name!r} names {beyond}, which is not a foreground label "
                                     f"(labels: {sorted(named)})")
        gaps = sorted(set(range(max(values) + 1)) - set(values))
        if gaps:
            raise ValueError(f"{where}: label values must be consecutive (0, 1, 2, ...) as nnU-Net requires; "
                             f"{gaps} missing from {values}")
        if self.has_regions:
            if self.regions_class_order is None:
                raise ValueError(f"{where}: region-based labels need 'regions_class_order' (one label per region: "
                                 f"{len(self.regions)})")
            if len(self.regions_class_order) != len(self.regions):
                raise ValueError(f"{where}: regions_class_order has {len(self.regions_class_order)} entries for "
                                 f"{len(self.regions)} regions")
        if self.ignore_label is not None and self.ignore_label != max(values) + 1:
            raise ValueError(f"{where}: the ignore label must be the highest value, one above every label "
                             f"({max(values) + 1}), got {self.ignore_label}")

    @property
    def has_regions(self) -> bool:
        """Whether the network predicts regions (sigmoid per region) rather than labels (softmax)."""
        return any(isinstance(member, tuple) for member in self.names.values())

    @property
    def all_labels(self) -> list[int]:
        """Every label value a label map may hold, background included, ignore left out; sorted."""
        values = set()
        for member in self.names.values():
            values.update(member if isinstance(member, tuple) else (member,))
        return sorted(values)

    @property
    def foreground_labels(self) -> list[int]:
        return [v for v in self.all_labels if v != 0]

    @property
    def regions(self) -> list[LabelOrRegion]:
        """The foreground regions in the file's order (region-based datasets; a single value is a one-label region)."""
        return [member for member in self.names.values() if member != 0]

    @property
    def num_outputs(self) -> int:
        """The network's output channels: one per foreground region, or one per label value."""
        return len(self.regions) if self.has_regions else len(self.all_labels)

    @property
    def scored(self) -> list[LabelOrRegion]:
        """What Dice is computed on: the regions, or the foreground labels."""
        return self.regions if self.has_regions else list(self.foreground_labels)

    def predicted_names(self) -> dict[int, str]:
        """The name of each foreground value a predicted label map holds: a label's own name, or for region-based
        datasets the name of the region painted with that value (the last one, as painting goes)."""
        if not self.has_regions:
            return {member: name for name, member in self.names.items() if isinstance(member, int) and member > 0}
        region_names = [name for name, member in self.names.items() if member != 0]
        return {value: name for name, value in zip(region_names, self.regions_class_order)}

    def to_json(self) -> dict[str, Any]:
        """The ``labels`` object as ``dataset.json`` holds it (regions as lists, ``ignore`` last)."""
        labels: dict[str, Any] = {name: list(m) if isinstance(m, tuple) else m for name, m in self.names.items()}
        if self.ignore_label is not None:
            labels["ignore"] = self.ignore_label
        return labels

    def paint_regions(self, probabilities: Any, out: Any) -> Any:
        """:func:`paint_regions` with this dataset's ``regions_class_order``."""
        return paint_regions(probabilities, self.regions_class_order, out)


def paint_regions(probabilities: Any, regions_class_order: Sequence[int], out: Any) -> Any:
    """Region probabilities ``(R, *spatial)`` -> labels in ``out`` (``*spatial``, zeros): each region above 0.5
    painted with its ``regions_class_order`` value, later regions over earlier ones (nnU-Net's rule)."""
    for index, value in enumerate(regions_class_order):
        out[probabilities[index] > 0.5] = value
    return out

