"""Message-passing layers, one operator per file. Each aggregates messages from neighbors, then transforms.

Every graph layer is a :class:`GraphLayer` (``graph_layer.py``), which declares what the models may ask of it.
GCNConv, GATConv, GINConv and SAGEConv also run on a sampled bipartite block (``has_block_form``):
``layer(x_sources, block.edge_index, ..., num_targets=block.num_targets)`` -> ``(num_targets, F')``
(conventions in :mod:`gnnseg.gnn.sampling.blocks`).
"""

from gnnseg.gnn.layers.gat import GATConv
from gnnseg.gnn.layers.gcn import GCNConv
from gnnseg.gnn.layers.gcnii import GCNIIConv
from gnnseg.gnn.layers.gin import GINConv
from gnnseg.gnn.layers.gine import GINEConv
from gnnseg.gnn.layers.graph_layer import GraphLayer
from gnnseg.gnn.layers.pairnorm import PairNorm
from gnnseg.gnn.layers.sage import SAGEConv
from gnnseg.gnn.layers.sgc import SGConv

__all__ = ["GATConv", "GCNConv", "GCNIIConv", "GINConv", "GINEConv", "GraphLayer", "PairNorm", "SAGEConv",
           "SGConv"]
