"""The ``gnnseg`` command: parses arguments and calls library functions; no logic lives here.

One module per half (:mod:`gnnseg.cli.gnn`, :mod:`gnnseg.cli.seg`) over the shared value parsers
(:mod:`gnnseg.cli.arguments`). Importing this package and building the parser import no torch: each command imports
what it runs, so ``gnnseg seg segment`` with an ONNX export starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from gnnseg.cli.gnn import add_gnn_commands
from gnnseg.cli.seg import add_seg_commands, add_serve_command
from gnnseg.core.jsonable import jsonable


def _print(result: dict, as_json: bool) -> None:
    if as_json:   # the last stdout line is the machine-readable result (NaN / inf become null)
        print(json.dumps(jsonable(result), sort_keys=True, allow_nan=False))
        return
    for key, value in result.items():
        print(f"{key:>22s}: {value:.4f}" if isinstance(value, float) else f"{key:>22s}: {value}")


def _demo(args: argparse.Namespace) -> dict:
    from gnnseg.demo import run_demo

    return run_demo(args.runs_dir, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gnnseg", description="Graph neural networks and biomedical "
                                                                 "image segmentation.")
    halves = parser.add_subparsers(dest="command", required=True)
    add_gnn_commands(halves)
    add_seg_commands(halves)
    add_serve_command(halves)

    demo = halves.add_parser("demo", help="the offline demo: karate-club GCN embeddings by depth and a U-Net "
                                          "on generated cells")
    demo.add_argument("--runs-dir", default="runs")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(handler=_demo)
    return parser


def _close_runs(status: str) -> list[str]:
    """Mark the runs this command made (if it made any: only then is the module loaded)."""
    runs = sys.modules.get("gnnseg.core.runs")
    return [str(path) for path in runs.close_runs(status)] if runs is not None else []


def _lost_a_rank(error: BaseException) -> bool:
    """Whether a distributed command stopped because another rank died or stalled (only such a command has loaded
    the exchange module)."""
    exchange = sys.modules.get("gnnseg.gnn.distributed.exchange")
    return exchange is not None and isinstance(error, exchange.RankLostError)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.handler(args)
    except KeyboardInterrupt:
        marked = _close_runs("interrupted")
        print("gnnseg: interrupted" + (f"; {', '.join(marked)} marked interrupted (--resume continues a run "
                                       "where the command has it)" if marked else ""), file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError, KeyError, ImportError) as exc:
        _close_runs("failed")
        print(f"gnnseg: error: {exc}", file=sys.stderr)
        if _lost_a_rank(exc):
            from gnnseg.core.distributed import exit_without_teardown
            exit_without_teardown(2)
        return 2
    _close_runs("complete")
    left_a_group = False
    if "torch.distributed" in sys.modules:      # only a command that imported torch can have joined a group
        from gnnseg.core.distributed import exit_without_teardown, leave_process_group
        left_a_group = leave_process_group()   # under torchrun: every rank finishes before any closes its connections
    _print(result, args.json)
    if left_a_group:
        exit_without_teardown(0)
    return 0

