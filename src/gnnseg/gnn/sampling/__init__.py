"""Mini-batch sampling into bipartite blocks: uniform neighbours (GraphSAGE), FastGCN and LADIES."""

from gnnseg.gnn.sampling.blocks import Block, FullNeighborhood
from gnnseg.gnn.sampling.importance import FastGCNSampler, LADIESSampler
from gnnseg.gnn.sampling.neighbor import NeighborSampler

__all__ = ["Block", "FastGCNSampler", "FullNeighborhood", "LADIESSampler", "NeighborSampler"]
