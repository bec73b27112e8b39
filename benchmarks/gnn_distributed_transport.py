"""Remote feature fetch over the trainer's two transports: all-to-all collectives (gloo) and RPC (TensorPipe).

``P`` processes (one thread each) own ``--rows`` feature rows each (``--features`` wide, float32). One fetch asks
for ``--ids`` rows drawn uniformly from all ranks (a mini-batch's input layer), through the classes the
partitioned trainer runs (:func:`gnnseg.gnn.distributed.runs.open_requests`):

* collectives (:class:`~gnnseg.gnn.distributed.exchange.CollectiveRequests`): ids grouped by owner, one
  all-to-all of sizes, one of ids, one of rows;
* RPC (:class:`~gnnseg.gnn.distributed.rpc_requests.RpcRequests`): one ``rpc_async`` per other owner with its ids,
  answered by the owner's RPC thread, waited together.

Every rank fetches at the same time (as in training). Reported: median time per fetch over ``--repeats`` after
warm-up, per transport and request size, and the ratio. Writes ``benchmarks/results/gnn_distributed_transport.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gnnseg.core import machine_info, write_json

RESULTS = Path(__file__).resolve().parent / "results"


def _requests(generator: torch.Generator, ids: int, world: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    nodes = torch.randint(0, world * rows, (ids,), generator=generator)
    return nodes // rows, nodes % rows                      # owner, local row (contiguous ownership)


def worker(rank: int, world: int, args: argparse.Namespace, port: int, out: str) -> None:
    from gnnseg.gnn.distributed.exchange import AllToAll
    from gnnseg.gnn.distributed.runs import open_requests

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    table = torch.randn(args.rows, args.features)
    results: dict[str, dict[int, float]] = {}
    dist.init_process_group("gloo", rank=rank, world_size=world)
    exchange = AllToAll(rank, world)
    for transport in ("collectives", "rpc"):
        requests = open_requests(transport, exchange)
        requests.answer("rows", lambda local: table.index_select(0, local))
        requests.ready()
        results[transport] = {}
        for ids in args.ids:
            generator = torch.Generator().manual_seed(rank)
            times = []
            for repeat in range(args.repeats + 3):
                owner, local = _requests(generator, ids, world, args.rows)
                began = time.perf_counter()
                order = torch.argsort(owner, stable=True)
                counts = torch.bincount(owner, minlength=world).tolist()
                replies = requests.ask("rows", list(local.index_select(0, order).split(counts)), reply_rows=counts)
                fetched = torch.empty(ids, args.features)
                fetched.index_copy_(0, order, torch.cat(replies))
                if repeat >= 3:
                    times.append(time.perf_counter() - began)
            results[transport][ids] = statistics.median(times)
        requests.close()
    dist.barrier()
    dist.destroy_process_group()
    torch.save(results, f"{out}/rank{rank}.pt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--rows", type=int, default=50_000, help="feature rows each rank owns")
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--ids", type=lambda text: [int(v) for v in text.split(",")], default=[1000, 14000],
                        help="rows per fetch (comma-separated; 14000 is a 200k-graph batch's remote rows)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--port", type=int, default=29731)
    parser.add_argument("--out-dir", default=str(RESULTS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(worker, args=(args.ranks, args, args.port, folder), nprocs=args.ranks, join=True)
        per_rank = [torch.load(f"{folder}/rank{rank}.pt", weights_only=True) for rank in range(args.ranks)]
    rows = []
    for ids in args.ids:
        collective = statistics.median(r["collectives"][ids] for r in per_rank)
        remote = statistics.median(r["rpc"][ids] for r in per_rank)
        rows.append({"ids_per_fetch": ids, "collectives_ms": 1e3 * collective, "rpc_ms": 1e3 * remote,
                     "rpc_over_collectives": remote / collective})
        print(f"{ids:>6} ids: collectives {1e3 * collective:7.2f} ms, RPC {1e3 * remote:7.2f} ms "
              f"(RPC / collectives {remote / collective:.2f})")
    write_json(Path(args.out_dir) / "gnn_distributed_transport.json",
               {"benchmark": "gnn_distributed_transport", "machine": machine_info(), "arguments": vars(args),
                "rows": rows})


if __name__ == "__main__":
    main()
