"""Partitioned graphs: METIS partitions round trip, training over 2 and 4 gloo processes computes what one process
computes over either transport (collectives, RPC), the distributed sampler draws from the single-machine sampler's
distribution and draws the same over both transports, and a rank that dies or stalls ends the job quickly with one
line (and the run resumes from its checkpoint)."""

from __future__ import annotations

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from gnnseg.core.distributed import leave_process_group
from gnnseg.gnn.datasets import load_node_dataset
from gnnseg.gnn.datasets.synthetic import SyntheticConfig, write_synthetic
from gnnseg.gnn.distributed.exchange import AllToAll
from gnnseg.gnn.distributed.partition import partition_graph
from gnnseg.gnn.distributed.partition_store import PartitionStore
from gnnseg.gnn.distributed.runs import join_with_timeout, open_requests
from gnnseg.gnn.distributed.training import batch_sizes, train_partitioned
from gnnseg.gnn.sampling import NeighborSampler
from gnnseg.gnn.tasks.minibatch import MiniBatchConfig, train_minibatch
from gnnseg.gnn.tasks.node import trainable_graph
from tests.core.ranks import become_rank, free_port

pytest.importorskip("pymetis", reason="partitioning needs pymetis (pip install 'gnnseg[distributed]')")

REPOSITORY = Path(__file__).resolve().parents[2]
# whole neighbourhoods (Cora's largest in-degree is 168) and no dropout: the distributed run must compute what
# one process computes on the same batches
EXACT = MiniBatchConfig(fanouts=(200, 200), hidden=32, dropout=0.0, lr=0.01, epochs=12, batch_size=512,
                        eval_max_nodes=256)       # evaluation in several chunks: halo rows fetched per chunk


def small_synthetic(tmp_path: Path) -> Path:
    config = SyntheticConfig(num_nodes=600, avg_degree=10, num_classes=4, num_features=6, homophily=0.7,
                             train_fraction=0.3, val_fraction=0.1, seed=3)
    write_synthetic(config, tmp_path / "graph")
    return tmp_path / "graph"


def check_round_trip(graph, out: Path, parts: int) -> dict:
    """Every node owned once, id maps inverse, every edge in its target's owner, halo exact, rows copied."""
    meta = json.loads((out / "partition.json").read_text())
    owner = np.load(out / "node_owner.npy")
    local = np.load(out / "node_local.npy")
    n = graph.num_nodes
    assert meta["num_parts"] == parts and owner.shape == local.shape == (n,)
    row_ptr, sources, _ = graph.csr()
    expected = np.sort(np.repeat(np.arange(n), np.diff(row_ptr.numpy())) * n + sources.numpy())
    seen, edges = np.zeros(n, dtype=np.int64), []
    x = graph.x.to_dense() if graph.x.is_sparse else graph.x
    for part in range(parts):
        store = PartitionStore.open(out, part)
        owned, halo = store.owned.numpy(), store.halo.numpy()
        seen[owned] += 1
        assert (np.diff(owned) > 0).all() and (owner[owned] == part).all()
        np.testing.assert_array_equal(local[owned], np.arange(owned.size))          # global -> local -> global
        global_ids = store.local_to_global.numpy()
        edge_sources = global_ids[store.sources.numpy().astype(np.int64)]
        edge_targets = np.repeat(owned, np.diff(store.row_ptr.numpy()))
        edges.append(edge_targets * n + edge_sources)
        np.testing.assert_array_equal(halo, np.unique(edge_sources[owner[edge_sources] != part]))
        torch.testing.assert_close(store.x, x[torch.from_numpy(owned)].float())
        np.testing.assert_array_equal(store.y.numpy(), graph.y.numpy()[owned])
        np.testing.assert_array_equal(store.split.numpy() == 1, graph.train_mask.numpy()[owned])
    np.testing.assert_array_equal(seen, np.ones(n))                                    # every node owned once
    np.testing.assert_array_equal(np.sort(np.concatenate(edges)), expected)            # every edge, once
    quality = meta["quality"]
    targets, edge_sources = expected // n, expected % n
    loops = targets == edge_sources
    pairs = np.unique(np.minimum(targets, edge_sources)[~loops] * n + np.maximum(targets, edge_sources)[~loops])
    assert quality["undirected_edges"] == pairs.size
    assert quality["edge_cut"] == int((owner[pairs // n] != owner[pairs % n]).sum())      # METIS's count, checked
    assert sum(p["nodes"] for p in quality["parts"]) == n
    assert quality["halo_nodes_total"] == sum(p["halo_nodes"] for p in quality["parts"])
    assert 0 < quality["edge_cut"] < quality["undirected_edges"] and quality["node_balance"] >= 1.0
    return meta


def test_cora_partitions_round_trip_and_balance_training_nodes(planetoid_root, tmp_path):
    graph = trainable_graph(load_node_dataset("cora", planetoid_root))
    meta = check_round_trip(graph, Path(partition_graph("cora", planetoid_root, 3, tmp_path / "cora3")["out"]), 3)
    quality = meta["quality"]
    # Cora's 140 training nodes are 20 per class: without their weight METIS can put most in one partition
    assert quality["train_balance"] < 1.25 and quality["edge_balance"] < 1.25
    assert quality["edge_cut_fraction"] < 0.15         # a citation graph cuts well; random would cut ~2/3
    assert meta["features_nonnegative"] is True


def test_synthetic_partitions_round_trip_and_refuse_an_existing_folder(tmp_path):
    folder = small_synthetic(tmp_path)
    graph = load_node_dataset(f"synth:{folder}")
    out = tmp_path / "parts"
    check_round_trip(graph, Path(partition_graph(f"synth:{folder}", None, 4, out)["out"]), 4)
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(FileExistsError, match="already exists"):
        partition_graph(f"synth:{folder}", None, 2, out)
    assert sorted(p.name for p in out.iterdir()) == before
    assert not list(tmp_path.glob(".parts.partial-*"))
    with pytest.raises(ValueError, match="parts must be a positive integer"):
        partition_graph(f"synth:{folder}", None, 0, tmp_path / "zero")


def test_the_global_batch_is_shared_so_every_rank_runs_the_same_steps():
    assert batch_sizes([10, 7], 4) == [[2, 2, 2, 2, 2], [2, 2, 1, 1, 1]]        # 17 nodes: 5 steps of <= 4
    assert batch_sizes([5, 5], 512) == [[5], [5]]
    with pytest.raises(ValueError, match="partition 1 owns 1 training nodes, fewer than the 3 steps"):
        batch_sizes([10, 1], 4)


# ------------------------------------------------------------------------------------ training on 2 and 4 ranks
def training_worker(rank: int, world_size: int, port: int, transport: str, parts: str, out: str) -> None:
    become_rank(rank, world_size, port)
    context = join_with_timeout(60)
    store = PartitionStore.open(parts, rank)
    requests = open_requests(transport, AllToAll(rank, world_size, 60))
    result = train_partitioned(store, EXACT, 0, requests, context)
    requests.close()
    torch.save({"test_acc": result.test_acc, "val_acc": result.val_acc, "loss": result.history["loss"],
                "state": result.state_dict, "remote_rows": result.remote_feature_rows_per_batch,
                "rounds": result.exchange_rounds_per_batch}, f"{out}/rank{rank}.pt")
    leave_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("parts, transport", [(2, "collectives"), (4, "collectives"), (4, "rpc")])
def test_training_on_partitions_matches_one_process(planetoid_root, tmp_path, parts, transport):
    out = Path(partition_graph("cora", planetoid_root, parts, tmp_path / "parts")["out"])
    mp.spawn(training_worker, args=(parts, free_port(), transport, str(out), str(tmp_path)), nprocs=parts, join=True)
    single = train_minibatch(load_node_dataset("cora", planetoid_root), EXACT, 0, show_progress=False)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(parts)]
    for rank in ranks:
        assert abs(rank["test_acc"] - single.test_acc) <= 0.01          # the bar; in fact equal
        np.testing.assert_allclose(rank["loss"], single.history["loss"], rtol=1e-4)
        for name, tensor in single.state_dict.items():
            torch.testing.assert_close(rank["state"][name], tensor, rtol=1e-3, atol=1e-4, msg=name)
        assert rank["remote_rows"] > 0                                 # features did cross partitions
        # per batch, collectives: 4 rounds per hop (sizes, requests, sizes, replies) + 3 for the features; RPC: one
        # round per request that leaves the rank: the first hop's drawing nodes are the rank's own seeds (none),
        # the second hop's (1), the features (1)
        assert rank["rounds"] == (11 if transport == "collectives" else 2)
    assert ranks[0]["test_acc"] == pytest.approx(single.test_acc, abs=1e-6)


# ----------------------------------------------------------------------------- the sampler's distribution
DRAWS = 1500


def sampling_worker(rank: int, world_size: int, port: int, parts: str, out: str) -> None:
    """Draws over the collectives, then the same draws over RPC (saved for the comparison)."""
    become_rank(rank, world_size, port)
    from gnnseg.gnn.distributed.distributed_sampler import DistributedNeighborSampler

    join_with_timeout(60)
    store = PartitionStore.open(parts, rank)
    seeds = store.owned[:3].to(torch.int64)
    exchange = AllToAll(rank, world_size, 60)
    sampler = DistributedNeighborSampler(store, (3, 3), open_requests("collectives", exchange))
    counts = torch.zeros(store.num_nodes, dtype=torch.int64)
    sizes, first = [], []
    for draw in range(DRAWS):
        blocks = sampler.sample(seeds, generator=1000 * draw + rank)
        counts.index_add_(0, blocks[0].source_nodes, torch.ones(blocks[0].num_sources, dtype=torch.int64))
        sizes.append(blocks[0].num_edges)
        if draw < 20:
            first.append([b.source_nodes for b in blocks])
    requests = open_requests("rpc", exchange)
    over_rpc = DistributedNeighborSampler(store, (3, 3), requests)
    requests.ready()
    again = [[b.source_nodes for b in over_rpc.sample(seeds, generator=1000 * draw + rank)] for draw in range(20)]
    requests.close()
    torch.save({"seeds": seeds, "counts": counts, "edges": torch.tensor(sizes), "remote": sampler.remote_nodes,
                "collective_draws": first, "rpc_draws": again}, f"{out}/sampled{rank}.pt")
    leave_process_group()


def contingency_p_value(first: np.ndarray, second: np.ndarray) -> float:
    """Chi-square test that two count vectors come from one distribution (cells with too few counts merged)."""
    from scipy.stats import chi2_contingency

    total = first + second
    order = np.argsort(total)
    small = total[order].cumsum() < 10
    kept = order[~small]
    table = np.stack([np.append(first[kept], first[order[small]].sum()),
                      np.append(second[kept], second[order[small]].sum())])
    table = table[:, table.sum(axis=0) > 0]
    return float(chi2_contingency(table)[1])


@pytest.mark.slow
def test_distributed_neighbourhoods_have_the_single_machine_distribution(tmp_path):
    folder = small_synthetic(tmp_path)
    parts = Path(partition_graph(f"synth:{folder}", None, 2, tmp_path / "parts")["out"])
    mp.spawn(sampling_worker, args=(2, free_port(), str(parts), str(tmp_path)), nprocs=2, join=True)
    result = torch.load(tmp_path / "sampled0.pt", weights_only=True)
    assert result["remote"] > 0                               # the second hop asked the other rank
    for rank in range(2):                                     # requests carry their seeds: the same draws over RPC
        saved = torch.load(tmp_path / f"sampled{rank}.pt", weights_only=True)
        for collective, remote in zip(saved["collective_draws"], saved["rpc_draws"], strict=True):
            for a, b in zip(collective, remote, strict=True):
                torch.testing.assert_close(a, b)
    single = NeighborSampler(load_node_dataset(f"synth:{folder}"), (3, 3), backend="torch")
    counts = torch.zeros_like(result["counts"])
    edges = []
    for draw in range(DRAWS):
        blocks = single.sample(result["seeds"], generator=777_000 + draw)
        counts.index_add_(0, blocks[0].source_nodes, torch.ones(blocks[0].num_sources, dtype=torch.int64))
        edges.append(blocks[0].num_edges)
    # how often each node is among the input nodes, and how many edges the input layer has
    assert contingency_p_value(result["counts"].numpy(), counts.numpy()) > 1e-3
    distributed_edges = np.bincount(result["edges"].numpy(), minlength=200)
    single_edges = np.bincount(np.array(edges), minlength=200)
    size = max(distributed_edges.size, single_edges.size)
    assert contingency_p_value(np.pad(distributed_edges, (0, size - distributed_edges.size)),
                               np.pad(single_edges, (0, size - single_edges.size))) > 1e-3
    # and the test can fail: a sampler with another fanout is told apart
    other = NeighborSampler(load_node_dataset(f"synth:{folder}"), (2, 3), backend="torch")
    other_counts = torch.zeros_like(counts)
    for draw in range(DRAWS):
        blocks = other.sample(result["seeds"], generator=555_000 + draw)
        other_counts.index_add_(0, blocks[0].source_nodes, torch.ones(blocks[0].num_sources, dtype=torch.int64))
    assert contingency_p_value(result["counts"].numpy(), other_counts.numpy()) < 1e-6


# --------------------------------------------------------------------------------------------- faults, resume
def owner_error_worker(rank: int, world_size: int, port: int, out: str) -> None:
    from gnnseg.gnn.distributed.rpc_requests import OwnerError

    become_rank(rank, world_size, port)
    join_with_timeout(30)
    requests = open_requests("rpc", AllToAll(rank, world_size, 30))
    requests.answer("rows", lambda ids: torch.arange(3.0)[ids])
    requests.ready()
    if rank == 0:
        message = ""
        try:
            requests.ask("rows", [torch.tensor([0]), torch.tensor([7])], phase="a test")
        except OwnerError as error:
            message = str(error)
        Path(out, "message.txt").write_text(message)
    requests.close()
    leave_process_group()


def test_an_owners_own_error_comes_back_as_one_line_not_as_a_lost_rank(tmp_path):
    mp.spawn(owner_error_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    assert (tmp_path / "message.txt").read_text() == ("rank 1 could not answer a rows request: IndexError: index 7 "
                                                      "is out of bounds for dimension 0 with size 3")


def test_the_rpc_agents_need_no_port_beside_the_process_groups(tmp_path):
    """The agents meet at the process group's own store, so another program listening on the next port (once the
    agents' default) cannot stop them."""
    with socket.socket() as other_program:
        while True:
            port = free_port()
            try:
                other_program.bind(("127.0.0.1", port + 1))
                break
            except OSError:
                continue
        other_program.listen()
        mp.spawn(owner_error_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    assert (tmp_path / "message.txt").read_text().startswith("rank 1 could not answer a rows request")


def late_rank_worker(rank: int, world_size: int, port: int, late_s: float, timeout_s: float) -> None:
    become_rank(rank, world_size, port)
    time.sleep(late_s if rank == world_size - 1 else 0.0)
    context = join_with_timeout(timeout_s)
    total = context.all_reduce_sum(torch.ones(1))
    assert total.item() == world_size
    leave_process_group()


def test_a_rank_that_starts_later_than_the_timeout_still_joins():
    """A rank still starting (imports on a busy machine) has not stalled: the others wait for it to arrive."""
    mp.spawn(late_rank_worker, args=(2, free_port(), 5.0, 2.0), nprocs=2, join=True)


def test_a_rank_that_never_starts_ends_the_set_up_with_one_line(monkeypatch):
    from gnnseg.gnn.distributed import runs
    from gnnseg.gnn.distributed.exchange import RankLostError

    monkeypatch.setattr(runs, "ARRIVAL_GRACE_S", 1.0)
    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(name, value)
    began = time.monotonic()
    expected = r"^rank 0 lost contact with the other ranks during set-up after \d\.\d s \(.* beyond the 1 s "
    with pytest.raises(RankLostError, match=expected):
        join_with_timeout(0.5)
    assert time.monotonic() - began < 10


def launch(parts: Path, runs: Path, port: int, world_size: int, *extra: str) -> list[subprocess.Popen]:
    """``gnnseg gnn train --partitions`` as torchrun would start it: one process per rank."""
    command = [sys.executable, "-m", "gnnseg.cli", "gnn", "train", "--model", "sage", "--partitions", str(parts),
               "--hidden", "16", "--fanouts", "10,5", "--patience", "1000", "--runs-dir", str(runs), "--json",
               *extra]
    environment = {**os.environ, "WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1",
                   "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return [subprocess.Popen(command, cwd=REPOSITORY, env={**environment, "RANK": str(rank),
                                                           "LOCAL_RANK": str(rank)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for rank in range(world_size)]


def wait_for_checkpoint(runs: Path, processes: list[subprocess.Popen], limit_s: float = 90) -> Path:
    began = time.monotonic()
    while not (found := glob.glob(str(runs / "gnn-train" / "*" / "checkpoint_seed0.pt"))):
        ended = [rank for rank, p in enumerate(processes) if p.poll() is not None]
        if ended:
            said = processes[ended[0]].stderr.read()[-2000:]
            raise AssertionError(f"rank {ended[0]} ended before the first checkpoint: {said}")
        assert time.monotonic() - began < limit_s, "no checkpoint was written"
        time.sleep(0.05)
    return Path(found[0]).parent


def finish(processes: list[subprocess.Popen]) -> list[dict]:
    """Every rank's summary; a rank that failed fails the test, and no rank outlives it waiting for its peers."""
    results = []
    try:
        for rank, process in enumerate(processes):
            out, err = process.communicate(timeout=180)
            assert process.returncode == 0, f"rank {rank} ended with {process.returncode}: {err[-2000:]}"
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


@pytest.mark.slow
def test_a_killed_rank_ends_the_job_with_one_line_and_the_run_resumes(planetoid_root, tmp_path):
    parts = Path(partition_graph("cora", planetoid_root, 2, tmp_path / "parts")["out"])
    complete = finish(launch(parts, tmp_path / "complete", free_port(), 2, "--epochs", "8"))

    processes = launch(parts, tmp_path / "runs", free_port(), 2, "--epochs", "8", "--timeout", "60")
    run_dir = wait_for_checkpoint(tmp_path / "runs", processes)
    processes[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    _, err = processes[0].communicate(timeout=60)
    assert time.monotonic() - killed_at < 20               # ended by the closed connection, not the 60 s timeout
    assert processes[0].returncode == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("gnnseg: error: rank 0 lost contact with the other ranks during ")
    assert "the job stops" in last

    resumed = finish(launch(parts, tmp_path / "runs", free_port(), 2, "--epochs", "8", "--resume", str(run_dir)))
    for key in ("test_acc_mean", "val_acc_mean", "epochs_run_mean"):
        assert resumed[0][key] == pytest.approx(complete[0][key], abs=1e-12), key
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["summary"]["test_acc_mean"] == resumed[0]["test_acc_mean"]
    # the saved model names the partitions' dataset: `gnnseg gnn eval` scores it on one machine, the same
    from gnnseg.gnn.tasks.saved_models import evaluate_saved_classifier

    scored = evaluate_saved_classifier(resumed[0]["checkpoint"], planetoid_root)
    assert scored["test_acc"] == pytest.approx(resumed[0]["test_acc_mean"], abs=1e-6)


@pytest.mark.slow
def test_torchrun_starts_partitioned_training_over_rpc(planetoid_root, tmp_path):
    """Under torchrun every rank is a client of the agent's store: the RPC agents must meet there too."""
    parts = partition_graph("cora", planetoid_root, 2, tmp_path / "parts")["out"]
    logs = tmp_path / "logs"         # every rank's output, one folder per rank
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "--log-dir", str(logs), "--redirects", "3", "-m", "gnnseg.cli", "gnn", "train",
               "--model", "sage", "--partitions", parts, "--hidden", "16", "--fanouts", "10,5", "--epochs", "40",
               "--runs-dir", str(tmp_path / "runs"), "--json", "--timeout", "60"]
    done = subprocess.run(command, cwd=REPOSITORY, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=240)
    ranks_said = "".join(f"\n--- {log.relative_to(logs)}\n{log.read_text()[-1500:]}"
                         for log in sorted(logs.rglob("stderr.log")))
    assert done.returncode == 0, done.stderr[-1000:] + ranks_said
    rank0_stdout = next(log for log in logs.rglob("stdout.log") if log.parent.name == "0")
    summary = json.loads(rank0_stdout.read_text().strip().splitlines()[-1])
    assert summary["transport"] == "rpc" and summary["remote_feature_rows_per_batch"] > 0
    assert summary["test_acc_mean"] > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["rpc", "collectives"])
def test_a_stalled_rank_ends_the_job_at_the_communication_timeout(planetoid_root, tmp_path, transport):
    parts = Path(partition_graph("cora", planetoid_root, 2, tmp_path / "parts")["out"])
    processes = launch(parts, tmp_path / "runs", free_port(), 2, "--epochs", "500", "--timeout", "4",
                       "--transport", transport)
    wait_for_checkpoint(tmp_path / "runs", processes)
    processes[1].send_signal(signal.SIGSTOP)
    stalled_at = time.monotonic()
    try:
        _, err = processes[0].communicate(timeout=60)
        waited = time.monotonic() - stalled_at
    finally:
        processes[1].kill()
        processes[1].communicate()
    assert processes[0].returncode == 2 and 3 < waited < 30, (processes[0].returncode, waited, err[-3000:])
    assert "stalled beyond the 4 s communication timeout" in err.strip().splitlines()[-1]


def test_a_partition_folder_needs_one_process_per_partition(planetoid_root, tmp_path):
    from gnnseg.gnn.distributed.runs import run_partitioned_classification

    parts = partition_graph("cora", planetoid_root, 2, tmp_path / "parts")["out"]
    with pytest.raises(ValueError, match="holds 2 partitions but 1 processes were started"):
        run_partitioned_classification(parts, "sage", None, runs_root=tmp_path / "runs")
    with pytest.raises(FileNotFoundError, match="is not a partition folder"):
        run_partitioned_classification(tmp_path, "sage", None, runs_root=tmp_path / "runs")


def test_cli_partition_prints_the_quality_and_refuses_an_existing_folder(planetoid_root, tmp_path, capsys, last_json):
    from gnnseg.cli import main

    out = tmp_path / "cora2"
    assert main(["gnn", "partition", "--dataset", "cora", "--root", str(planetoid_root), "--parts", "2", "--out",
                 str(out), "--json"]) == 0
    printed = last_json()
    assert printed["num_parts"] == 2 and printed["out"] == str(out) and printed["num_nodes"] == 2708
    assert printed["quality"] == json.loads((out / "partition.json").read_text())["quality"]
    assert main(["gnn", "partition", "--dataset", "cora", "--root", str(planetoid_root), "--parts", "2", "--out",
                 str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["gnn", "train", "--model", "sage", "--partitions", str(out), "--split", "random:0.6,0.2,0.2"]) == 2
    assert "--split cannot be used with --partitions" in capsys.readouterr().err
