"""OGB's molecule featurization (``ogb.utils.smiles2graph``), so molecule figures compare with OGB's leaderboard.

``ogb_smiles_to_graph(smiles)`` is a :class:`Graph` holding exactly the arrays ``smiles2graph`` returns:
``x (atoms, 9)`` and ``edge_attr (2 * bonds, 3)`` as int64 *category indices*, not one-hot floats, with
edges in OGB's order (bond ``k`` gives edges ``2k: i -> j`` and ``2k + 1: j -> i``, as gnnseg's own
featurizer). Atom columns: atomic number, chirality, total degree, formal charge, total hydrogens, radical
electrons, hybridization, aromatic, in ring; bond columns: bond type, stereo, conjugated
(``ogb/utils/features.py``). Each column ``k`` takes values ``0 .. vocabulary[k] - 1``, the last one "other".

A model embeds these codes (``gnnseg.gnn.categorical_features``) with the vocabulary sizes below, copied from
``ogb.utils.features.get_atom_feature_dims()`` / ``get_bond_feature_dims()`` (tested equal), so training and
screening need ogb only to featurize, never to build a model.
"""

from __future__ import annotations

import torch

from gnnseg.gnn.graph import Graph
from gnnseg.gnn.ogb_package import require_ogb

OGB_ATOM_VOCABULARY = (119, 5, 12, 12, 10, 6, 6, 2, 2)
OGB_BOND_VOCABULARY = (5, 6, 2)
OGB_FEATURIZER_VERSION = "ogb.smiles2graph/1.3:9x3"


def ogb_smiles_to_graph(smiles: str) -> Graph:
    """``ogb.utils.smiles2graph(smiles)`` as a :class:`Graph` (``name`` = the SMILES). The SMILES must already
    be valid (``molecule_graphs.parse_smiles`` checks it and names the reason when it is not)."""
    converted = require_ogb("ogb.utils", "--featurizer ogb (OGB's smiles2graph)").smiles2graph(smiles)
    return Graph(edge_index=torch.from_numpy(converted["edge_index"]), num_nodes=int(converted["num_nodes"]),
                 x=torch.from_numpy(converted["node_feat"]), edge_attr=torch.from_numpy(converted["edge_feat"]),
                 name=smiles)
