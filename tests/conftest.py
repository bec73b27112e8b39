"""Shared test fixtures: where the real datasets live, and small random graphs with awkward features."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def require_dataset(relative: str) -> Path:
    """Path under ``../shared/datasets``, or skip the test saying which file is missing."""
    path = DATASETS / relative
    if not path.exists():
        pytest.skip(f"dataset file not found: {path} (tests read real data from ../shared/datasets)")
    return path


def awkward_graph(num_nodes: int = 30, num_edges: int = 120, seed: int = 0) -> torch.Tensor:
    """A random directed edge list with self-loops, duplicate edges and isolated nodes.

    Nodes ``num_nodes - 3 ..`` never appear in an edge (isolated).
    """
    generator = torch.Generator().manual_seed(seed)
    edges = torch.randint(0, num_nodes - 3, (2, num_edges), generator=generator)
    loops = torch.tensor([[0, 1, 1], [0, 1, 1]])              # a loop and a duplicated loop
    duplicates = edges[:, :10]                                 # ten repeated edges
    return torch.cat([edges, loops, duplicates], dim=1)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """gnnseg's caches (optimised onnxruntime graphs) go to a folder of the test session, not the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GNNSEG_CACHE_DIR", str(tmp_path_factory.mktemp("gnnseg_cache")))
        yield


@pytest.fixture
def one_thread():
    """torch on one intra-op thread for the test: tiny tensors compute fastest so, and are immune to a busy machine,
    where two OpenMP threads spinning against another process made a small overfit test 50x slower (19 s, not
    0.4 s). Files of tiny networks use it for every test (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def last_json(capsys):
    """Call it after a ``--json`` command: the command's answer, its last stdout line, parsed."""
    return lambda: json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture
def planetoid_root() -> Path:
    return require_dataset("planetoid")
