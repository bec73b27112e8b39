"""The lecture's karate-club picture: a GCN learns 2D node embeddings from two labeled members.

For each depth ``L`` the model is ``L`` GCN layers (16 wide, the last one 2 wide, tanh) and a linear
classifier on the 2D embedding. Only the two leaders' clubs are known during training; the figure
shows where every member lands and how accuracy on the other 32 changes with depth (deep stacks start
to over-smooth: Li, Han & Wu, AAAI 2018, Fig. 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gnnseg.core import seed_everything
from gnnseg.gnn.datasets.karate import CLUBS, load_karate
from gnnseg.gnn.layers import GCNConv
from gnnseg.gnn.models import NodeLinear, StackedGNN
from gnnseg.gnn.tasks.node import NodeConfig, train_node_classifier

KARATE_CONFIG = NodeConfig(model="gcn", dropout=0.0, lr=0.01, weight_decay=5e-4, decay_first_layer_only=False,
                           epochs=300, stopping="none", select="last", row_normalize_features=False)


def karate_model(num_features: int, num_layers: int, hidden: int = 16) -> StackedGNN:
    widths = [num_features] + [hidden] * (num_layers - 1) + [2]
    layers = [GCNConv(a, b) for a, b in zip(widths, widths[1:])]
    return StackedGNN([*layers, NodeLinear(2, len(CLUBS))], activation=torch.tanh)


@dataclass
class KarateEmbedding:
    num_layers: int
    embedding: Tensor  # (34, 2), the last GCN layer's output after tanh
    accuracy: float    # on the unlabeled members
    final_loss: float


def karate_embeddings(depths: range = range(1, 6), seed: int = 0) -> tuple[list[KarateEmbedding], object]:
    """Train one model per depth and return the learned embeddings with the graph they came from."""
    graph = load_karate()
    outcomes = []
    for depth in depths:
        seed_everything(seed)
        model = karate_model(graph.num_features, depth)
        result = train_node_classifier(graph, KARATE_CONFIG, seed, model=model, show_progress=False)
        model.load_state_dict(result.state_dict)
        model.eval()
        with torch.no_grad():
            _, hidden = model(graph.x, graph.edge_index, return_hidden=True)
        outcomes.append(KarateEmbedding(depth, hidden[-2], result.test_acc, result.history["train_loss"][-1]))
    return outcomes, graph
