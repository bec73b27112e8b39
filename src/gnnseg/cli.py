"""The ``gnnseg`` command: parses arguments and calls library functions; no logic lives here."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from gnnseg.gnn.datasets import NODE_DATASETS
from gnnseg.gnn.tasks.node import MODELS


def _print(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, sort_keys=True))  # the last stdout line is the machine-readable result
        return
    for key, value in result.items():
        print(f"{key:>22s}: {value:.4f}" if isinstance(value, float) else f"{key:>22s}: {value}")


def _gnn_train(args: argparse.Namespace) -> dict:
    from gnnseg.gnn.tasks.node_runs import run_node_classification

    overrides = {key: value for key, value in (("epochs", args.epochs), ("lr", args.lr),
                                               ("hidden", args.hidden)) if value is not None}
    return run_node_classification(args.model, args.dataset, args.root, seeds=args.seeds, first_seed=args.seed,
                                   runs_root=args.runs_dir, overrides=overrides,
                                   show_progress=False if args.json else None)


def _gnn_eval(args: argparse.Namespace) -> dict:
    from gnnseg.gnn.tasks.node_runs import evaluate_checkpoint

    return evaluate_checkpoint(args.checkpoint, args.root, args.dataset)


def _demo(args: argparse.Namespace) -> dict:
    from gnnseg.demo import run_demo

    return run_demo(args.runs_dir, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gnnseg", description="Graph neural networks and biomedical "
                                                                 "image segmentation.")
    halves = parser.add_subparsers(dest="command", required=True)

    gnn = halves.add_parser("gnn", help="graph neural networks").add_subparsers(dest="gnn_command", required=True)
    train = gnn.add_parser("train", help="semi-supervised node classification over several seeds")
    train.add_argument("--model", choices=MODELS, default="gcn")
    train.add_argument("--dataset", choices=NODE_DATASETS, default="cora")
    train.add_argument("--root", help="folder holding the raw Planetoid files (ind.<name>.*)")
    train.add_argument("--seeds", type=int, default=1, help="number of seeds to train (default 1)")
    train.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    train.add_argument("--epochs", type=int, help="override the preset's maximum epochs")
    train.add_argument("--lr", type=float, help="override the preset's learning rate")
    train.add_argument("--hidden", type=int, help="override the preset's hidden width")
    train.add_argument("--runs-dir", default="runs", help="where run directories are created (default runs/)")
    train.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    train.set_defaults(handler=_gnn_train)

    evaluate = gnn.add_parser("eval", help="re-evaluate a saved node classifier")
    evaluate.add_argument("--checkpoint", required=True)
    evaluate.add_argument("--root", help="folder holding the raw Planetoid files")
    evaluate.add_argument("--dataset", choices=NODE_DATASETS, help="default: the checkpoint's dataset")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(handler=_gnn_eval)

    demo = halves.add_parser("demo", help="the offline demo: karate-club GCN embeddings by depth")
    demo.add_argument("--runs-dir", default="runs")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.handler(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"gnnseg: error: {exc}", file=sys.stderr)
        return 2
    _print(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
