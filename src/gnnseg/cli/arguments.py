"""What both halves of the command line share: value parsers that answer bad input with argparse's own error,
choices read only when argparse looks at them, and the device option's help."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from importlib import import_module

DEVICE_HELP = "cpu, cuda or cuda:N (default: the GPU where there is one, else the CPU)"


class LazyChoices(Sequence):
    """Choices named by a module attribute, read when argparse first looks at them (to check a value given for
    that option, or to list them in an error), so that building the parser imports none of those modules. Options
    with such choices carry a ``metavar``: argparse would otherwise read the choices to format it."""

    def __init__(self, module: str, attribute: str, *extra: str) -> None:
        self.module, self.attribute, self.extra = module, attribute, extra

    def _names(self) -> tuple[str, ...]:
        return (*getattr(import_module(self.module), self.attribute), *self.extra)

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())


def probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a probability must be a number in [0, 1], got {text!r}")
    return value


def numbers(text: str, count: int, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be {count} comma-separated numbers, got {text!r}") from None
    if len(values) != count:
        raise argparse.ArgumentTypeError(f"{what} must be {count} comma-separated numbers, got {text!r}")
    return values


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 25,10, got {text!r}") from None


def label_names(text: str) -> dict[str, int]:
    """``liver=1,tumour=2`` as ``{"liver": 1, "tumour": 2}``."""
    labels = {}
    for item in text.split(","):
        name, separator, value = item.partition("=")
        if not separator or not name.strip() or not value.strip().isdigit():
            raise argparse.ArgumentTypeError(f"expected name=value,... with integer values, got {item!r}")
        labels[name.strip()] = int(value)
    return labels


def node_dataset(text: str) -> str:
    from gnnseg.gnn.datasets import check_node_dataset

    try:
        return check_node_dataset(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def node_split(text: str) -> tuple[float, float, float]:
    from gnnseg.gnn.node_splits import parse_split

    try:
        return parse_split(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def depths(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"depths must be comma-separated layer counts, got {text!r}") from None


def names(text: str) -> list[str]:
    return [] if text.strip().lower() in ("", "none") else [v.strip() for v in text.split(",")]


def box(text: str) -> list[float]:
    return numbers(text, 4, "a box (x0,y0,x1,y1)")


def box3d(text: str) -> list[float]:
    return numbers(text, 6, "a 3D box (x_min,y_min,z_min,x_max,y_max,z_max)")


def point(text: str) -> list[float]:
    x, y, label = numbers(text, 3, "a point (x,y,label)")
    if label not in (0, 1):
        raise argparse.ArgumentTypeError(f"a point's label is 1 (inside the object) or 0 (outside), got {text!r}")
    return [x, y, label]
