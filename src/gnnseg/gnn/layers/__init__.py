"""Message-passing layers, one operator per file. Each aggregates messages from neighbors, then transforms."""

from gnnseg.gnn.layers.gat import GATConv
from gnnseg.gnn.layers.gcn import GCNConv
from gnnseg.gnn.layers.gcnii import GCNIIConv
from gnnseg.gnn.layers.gin import GINConv
from gnnseg.gnn.layers.gine import GINEConv
from gnnseg.gnn.layers.pairnorm import PairNorm
from gnnseg.gnn.layers.sgc import SGConv

__all__ = ["GATConv", "GCNConv", "GCNIIConv", "GINConv", "GINEConv", "PairNorm", "SGConv"]
