"""Zachary's karate club (34 members, 78 friendships), the club each member joined as the label."""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx
import torch

from gnnseg.gnn.graph import Graph

CLUBS = ("Mr. Hi", "Officer")
LEADERS = (0, 33)  # the instructor (Mr. Hi) and the administrator (John A.)


def load_karate(labeled: Sequence[int] = LEADERS) -> Graph:
    """The karate club with one-hot identity features (no attributes, structure only).

    ``labeled`` are the nodes whose club is known during training (``train_mask``); every other node is in
    ``test_mask``. The default labels only the two leaders, the semi-supervised setting of Kipf's demo.
    """
    network = nx.karate_club_graph()
    bad = [node for node in labeled if not 0 <= node < network.number_of_nodes()]
    if bad:
        raise ValueError(f"labeled nodes {bad} are outside 0..{network.number_of_nodes() - 1}")
    structure = nx.Graph(network.edges())  # drop the interaction-count weights: structure only
    graph = Graph.from_networkx(structure, name="karate")
    num_nodes = graph.num_nodes
    train = torch.zeros(num_nodes, dtype=torch.bool)
    train[list(labeled)] = True
    clubs = [CLUBS.index(network.nodes[node]["club"]) for node in structure.nodes]
    return Graph(edge_index=graph.edge_index, num_nodes=num_nodes, x=torch.eye(num_nodes),
                 y=torch.tensor(clubs), train_mask=train, test_mask=~train, name="karate").validate()
