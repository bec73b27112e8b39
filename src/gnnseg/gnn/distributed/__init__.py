"""Graphs larger than one machine: METIS partitions (``partition.py``), a rank's memory-mapped partition
(``partition_store.py``), all-to-all exchanges over ``torch.distributed`` (``exchange.py``), the distributed
neighbour sampler and feature fetch (``distributed_sampler.py``, ``feature_fetch.py``), exact distributed
evaluation (``evaluation.py``) and the trainer (``training.py``, ``runs.py``). The single-machine sampler in
:mod:`gnnseg.gnn.sampling` stays the oracle: the distributed one draws from the same distribution."""
