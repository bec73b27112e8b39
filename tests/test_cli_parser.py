"""The command line's parser: built without importing torch, and its help names every choice it accepts."""

from __future__ import annotations

import subprocess
import sys

from gnnseg.cli import build_parser
from gnnseg.gnn.datasets import NODE_DATASETS
from gnnseg.gnn.tasks.node import MODELS
from gnnseg.seg.unet.network import NETWORKS


def _help(*command: str) -> str:
    parser = build_parser()
    for name in command:
        parser = next(action for action in parser._subparsers._group_actions).choices[name]
    return parser.format_help()


def test_help_lists_every_dataset_model_and_network_the_parser_accepts():
    assert all(name in _help("gnn", "train") for name in (*NODE_DATASETS, *MODELS, "sage"))
    assert all(name in _help("gnn", "linkpred") for name in NODE_DATASETS)
    assert all(name in _help("seg", "train") for name in NETWORKS)
    args = build_parser().parse_args(["gnn", "train", "--model", "sage", "--dataset", "CiteSeer"])
    assert (args.model, args.dataset) == ("sage", "citeseer")


def test_building_the_parser_imports_no_torch():
    script = ("import sys\nfrom gnnseg.cli import build_parser\n"
              "build_parser().parse_args(['seg', 'segment', '--image', 'a.png', '--box', '1,2,3,4', '-o', 'b.png'])\n"
              "assert 'torch' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
