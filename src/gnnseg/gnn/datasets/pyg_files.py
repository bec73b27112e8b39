"""PyG graphs saved on disk, read without unpickling code: ``pyg:PATH``.

``PATH`` is a PyG dataset folder (an ``InMemoryDataset``'s ``root/<name>``, or its ``processed/`` folder) whose
``processed/*.pt`` PyG wrote, or one file holding a ``Data`` saved by ``torch.save`` (also a ``Data.to_dict()``
or a list of one ``Data``). Files are read by ``torch.load(weights_only=True)`` with the classes PyG registers as
safe when it is imported (``Data``, ``HeteroData``) and, for this load only, the plain containers a pickled ``Data``
holds (its storages and attribute keys: :func:`pyg_containers`); never by PyG's own ``fs.torch_load``, which
retries a refused file with a full unpickle. A file that would need one, because it holds other Python objects, is
refused.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from gnnseg.gnn.graph import Graph, GraphValidationError, as_graphs, require_pyg_data

# files PyG writes beside a dataset's data: the repr of its pre-transform and pre-filter
PYG_BOOKKEEPING = ("pre_transform.pt", "pre_filter.pt")


class PyGFileError(ValueError):
    """A PyG file or folder cannot be read as one graph: the message names the file and the problem."""


def pyg_data_file(path: str | os.PathLike) -> Path:
    """The file to read for ``pyg:PATH``: ``PATH`` itself, or the one data file in ``PATH/processed`` (or in
    ``PATH`` when it is the ``processed`` folder)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise PyGFileError(f"pyg:{path}: no such file or folder")
    folder = path / "processed" if (path / "processed").is_dir() else path
    candidates = sorted(p for p in folder.glob("*.pt") if p.name not in PYG_BOOKKEEPING)
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise PyGFileError(f"pyg:{path}: expected one data file (*.pt) in {folder}, found {found}; name the file "
                           f"itself, e.g. pyg:{folder / 'data.pt'}")
    return candidates[0]


def pyg_containers() -> list[type]:
    """The classes a ``torch.save``'d ``Data`` (or ``HeteroData``) pickles besides itself, which PyG does not
    register as safe: attribute-key records and storages, containers of tensors whose ``__setstate__`` only sets
    their attributes."""
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import EdgeStorage, GlobalStorage, NodeStorage

    return [DataEdgeAttr, DataTensorAttr, GlobalStorage, NodeStorage, EdgeStorage]


def load_pyg_data(path: str | os.PathLike) -> Any:
    """The ``torch_geometric.data.Data`` saved at ``pyg:PATH`` (:func:`pyg_data_file`), loaded with
    ``weights_only=True``. Raises :class:`PyGFileError` for a file that needs unsafe unpickling, for a dataset
    of several graphs and for contents that are no graph."""
    content, file, pyg = _load_content(path)
    return _single_data(content, file, pyg)


def load_pyg_graphs(path: str | os.PathLike) -> list[Graph]:
    """Every graph saved at ``pyg:PATH`` (graph classification): an ``InMemoryDataset``'s processed file, such as
    PyG's ``TUDataset`` root ``MUTAG/``, or a list of ``Data`` saved by ``torch.save``; loaded as
    :func:`load_pyg_data` loads, each graph named ``<folder>[i]``."""
    content, file, pyg = _load_content(path)
    folder = Path(path).parent if Path(path).name == "processed" else Path(path)
    name = file.stem if Path(path).is_file() else folder.name
    if isinstance(content, list) and content and all(isinstance(item, pyg.Data) for item in content):
        graphs = content
    elif isinstance(content, tuple) and len(content) in (2, 3, 4):
        data, slices = _dataset_parts(content, file, pyg)
        from torch_geometric.data.separate import separate

        count = len(next(iter(slices.values()))) - 1 if slices else 1
        graphs = [separate(cls=type(data), batch=data, idx=i, slice_dict=slices, decrement=False)
                  for i in range(count)] if slices else [data]
    else:
        graphs = [_single_data(content, file, pyg)]
    try:
        return [replace(graph, name=f"{name}[{i}]").validate() for i, graph in enumerate(as_graphs(graphs))]
    except GraphValidationError as exc:
        raise PyGFileError(f"{file}: {exc}") from None


def _load_content(path: str | os.PathLike) -> tuple[Any, Path, Any]:
    """What ``torch.load(weights_only=True)`` gives for ``pyg:PATH``, its file, and ``torch_geometric.data``."""
    pyg = require_pyg_data("pyg:PATH")      # importing PyG registers its Data classes as safe to load
    file = pyg_data_file(path)
    try:
        with torch.serialization.safe_globals(pyg_containers()):
            content = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        blocked = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if blocked is None:     # not a pickle that asks for code: not a torch file at all
            raise PyGFileError(f"cannot read {file}: not a file written by torch.save ({str(exc).splitlines()[0]})") \
                from None
        raise PyGFileError(f"{file} holds Python objects ({blocked.group(1)}) that only an unsafe unpickle could "
                           f"load, and that can run any code; gnnseg loads PyG data with weights_only=True. Where the "
                           f"file is trusted, save plain tensors instead: torch.save(Data(x=..., edge_index=..., "
                           f"y=...), path)") from None
    except Exception as exc:  # torch raises several types for files that are not torch files at all
        raise PyGFileError(f"cannot read {file}: not a file written by torch.save ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    return content, file, pyg


def _dataset_parts(content: tuple, file: Path, pyg: Any) -> tuple[Any, dict]:
    """The collated ``Data`` and its slices from an ``InMemoryDataset``'s ``(data, slices[, data_class])``, or
    ``TUDataset``'s ``(data, slices, sizes, data_class)``."""
    data, slices = content[0], content[1]
    data_class = content[-1] if len(content) > 2 else pyg.Data
    if data_class is not pyg.Data:
        raise PyGFileError(f"{file} holds {getattr(data_class, '__name__', data_class)} graphs; gnnseg reads "
                           f"homogeneous Data")
    return (data if isinstance(data, pyg.Data) else pyg.Data.from_dict(data)), slices


def _single_data(content: Any, file: Path, pyg: Any) -> Any:
    """One ``Data`` from what PyG and users save: a ``Data``; a list of one; a ``to_dict()``; or an
    ``InMemoryDataset``'s processed tuple (:func:`_dataset_parts`) for a single graph."""
    if isinstance(content, pyg.Data):
        return content
    if isinstance(content, pyg.HeteroData):
        raise PyGFileError(f"{file} holds a heterogeneous graph (HeteroData); save data.to_homogeneous() instead")
    if isinstance(content, list) and all(isinstance(item, pyg.Data) for item in content) and len(content) > 1:
        raise PyGFileError(f"{file} holds a list of {len(content)} graphs; node classification trains on one "
                           f"(gnn graphclass reads all of them)")
    if isinstance(content, list | tuple) and len(content) == 1:
        return _single_data(content[0], file, pyg)
    if isinstance(content, dict) and "edge_index" in content:
        return pyg.Data.from_dict(content)
    if isinstance(content, tuple) and len(content) in (2, 3, 4):            # InMemoryDataset.save's layout
        data, slices = _dataset_parts(content, file, pyg)
        graphs = 1 if not slices else len(next(iter(slices.values()))) - 1
        if graphs != 1:
            raise PyGFileError(f"{file} is a PyG dataset of {graphs} graphs; node classification trains on one "
                               f"(save dataset[i] with torch.save; gnn graphclass reads all of them)")
        return data
    raise PyGFileError(f"{file} holds a {type(content).__name__}, not a PyG graph (a Data, its to_dict(), or an "
                       f"InMemoryDataset's processed file)")


def load_pyg(path: str | os.PathLike) -> Graph:
    """``pyg:PATH`` as a :class:`Graph`, named after the dataset folder or the file (:func:`load_pyg_data`)."""
    path = Path(path)
    data = load_pyg_data(path)
    folder = path.parent if path.name == "processed" else path
    default_name = path.stem if path.is_file() else folder.name
    graph = Graph.from_pyg(data, name=data.name if isinstance(getattr(data, "name", None), str) else default_name)
    try:
        return graph.validate()
    except GraphValidationError as exc:
        raise PyGFileError(f"{pyg_data_file(path)}: {exc}") from None
