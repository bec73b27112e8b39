"""Molecules as graphs: SMILES -> :class:`Graph` with one-hot atom features and bond features (RDKit).

Atoms are nodes, bonds are edges stored in both directions (bond ``k`` between atoms ``i`` and ``j`` gives
edges ``2k: i -> j`` and ``2k + 1: j -> i``, both carrying the bond's features). Hydrogens stay implicit:
they are counted in an atom feature, as in MoleculeNet / chemprop / OGB featurizers.

Atom features (``ATOM_FEATURES`` wide), each a one-hot block whose last slot is "other":

========================  =========================================================================
block                     values
========================  =========================================================================
element                   ``ATOM_TYPES`` (the 43 elements of DeepChem's ConvMol featurizer,
                          Duvenaud et al. 2015) + other
degree (heavy neighbours) 0..5 + other
formal charge             -2, -1, 0, +1, +2 + other
total hydrogens           0..4 + other
aromatic                  one flag (no "other")
hybridization             SP, SP2, SP3, SP3D, SP3D2 + other
========================  =========================================================================

Bond features (``BOND_FEATURES`` = 6): bond type one-hot (single, double, triple, aromatic), conjugated,
in a ring.

``featurizer="ogb"`` (:data:`FEATURIZERS`) builds the graph with OGB's ``smiles2graph`` instead
(``ogb_molecule_features``: 9 atom and 3 bond features as integer codes), for figures comparable with OGB's.
Either way the SMILES is checked here first, so an invalid one gets the same reason.

RDKit is an optional dependency (``pip install 'gnnseg[chem]'``); it is imported only when a function here
needs it, so the rest of gnnseg imports without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from gnnseg.gnn.graph import Graph
from gnnseg.gnn.ogb_molecule_features import OGB_FEATURIZER_VERSION, ogb_smiles_to_graph

if TYPE_CHECKING:  # pragma: no cover
    from rdkit.Chem import Mol

ATOM_TYPES = ("C", "N", "O", "S", "F", "Si", "P", "Cl", "Br", "Mg", "Na", "Ca", "Fe", "As", "Al", "I", "B", "V",
              "K", "Tl", "Yb", "Sb", "Sn", "Ag", "Pd", "Co", "Se", "Ti", "Zn", "H", "Li", "Ge", "Cu", "Au", "Ni",
              "Cd", "In", "Mn", "Zr", "Cr", "Pt", "Hg", "Pb")
DEGREES = (0, 1, 2, 3, 4, 5)
FORMAL_CHARGES = (-2, -1, 0, 1, 2)
HYDROGEN_COUNTS = (0, 1, 2, 3, 4)
HYBRIDIZATIONS = ("SP", "SP2", "SP3", "SP3D", "SP3D2")
BOND_TYPES = ("SINGLE", "DOUBLE", "TRIPLE", "AROMATIC")

# (name, number of slots) of each atom-feature block, in order; "+ 1" is the "other" slot.
ATOM_BLOCKS = (("element", len(ATOM_TYPES) + 1), ("degree", len(DEGREES) + 1),
               ("formal_charge", len(FORMAL_CHARGES) + 1), ("hydrogens", len(HYDROGEN_COUNTS) + 1),
               ("aromatic", 1), ("hybridization", len(HYBRIDIZATIONS) + 1))
ATOM_FEATURES = sum(width for _, width in ATOM_BLOCKS)
BOND_FEATURES = len(BOND_TYPES) + 2
# Stored in checkpoints: a model only scores molecules featurized the same way.
FEATURIZER_VERSION = f"gnnseg.molecules/1:{ATOM_FEATURES}x{BOND_FEATURES}"

Featurizer = Literal["gnnseg", "ogb"]
FEATURIZERS = ("gnnseg", "ogb")
FEATURIZER_VERSIONS = {"gnnseg": FEATURIZER_VERSION, "ogb": OGB_FEATURIZER_VERSION}


def check_featurizer(featurizer: str) -> None:
    if featurizer not in FEATURIZERS:
        raise ValueError(f"featurizer must be one of {FEATURIZERS}, got {featurizer!r}")


class InvalidSmilesError(ValueError):
    """A SMILES string RDKit cannot turn into a molecule; ``reason`` says why, the message adds the text."""

    def __init__(self, smiles: str, reason: str) -> None:
        super().__init__(f"invalid SMILES {smiles!r}: {reason}")
        self.smiles, self.reason = smiles, reason


def require_rdkit() -> Any:
    """Import RDKit's ``Chem`` module, or raise an ImportError saying how to install it."""
    try:
        from rdkit import Chem
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("molecule support needs RDKit: pip install 'gnnseg[chem]' (or pip install rdkit)") from exc
    return Chem


def parse_smiles(smiles: str) -> Mol:
    """An RDKit molecule, or :class:`InvalidSmilesError` naming the reason (syntax, valence, no atoms).

    RDKit's own error log is silenced: the reason travels in the exception instead.
    """
    Chem = require_rdkit()
    from rdkit import rdBase
    from rdkit.Chem.rdchem import MolSanitizeException

    text = smiles.strip()
    if not text:
        raise InvalidSmilesError(smiles, "empty")
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(text)
        if mol is None:
            raw = Chem.MolFromSmiles(text, sanitize=False)
            if raw is None:
                raise InvalidSmilesError(smiles, "RDKit cannot parse it (SMILES syntax)")
            try:
                Chem.SanitizeMol(raw)
            except MolSanitizeException as exc:  # valence, kekulization, ... (all subclasses)
                raise InvalidSmilesError(smiles, f"RDKit sanitization failed: {exc}") from None
            raise InvalidSmilesError(smiles, "RDKit rejects it")  # pragma: no cover - parse failed, sanitize passed
    if mol.GetNumAtoms() == 0:
        raise InvalidSmilesError(smiles, "no atoms")
    return mol


def _one_hot(value: Any, choices: tuple, out: np.ndarray, offset: int) -> int:
    """Set ``out[offset + index of value]`` (or the "other" slot after the choices); return the next offset."""
    try:
        out[offset + choices.index(value)] = 1.0
    except ValueError:
        out[offset + len(choices)] = 1.0
    return offset + len(choices) + 1


def atom_features(atom: Any) -> np.ndarray:
    """One RDKit atom -> ``(ATOM_FEATURES,)`` float32 of one-hot blocks (see the module docstring)."""
    out = np.zeros(ATOM_FEATURES, dtype=np.float32)
    offset = _one_hot(atom.GetSymbol(), ATOM_TYPES, out, 0)
    offset = _one_hot(atom.GetDegree(), DEGREES, out, offset)
    offset = _one_hot(atom.GetFormalCharge(), FORMAL_CHARGES, out, offset)
    offset = _one_hot(atom.GetTotalNumHs(), HYDROGEN_COUNTS, out, offset)
    out[offset] = float(atom.GetIsAromatic())
    offset += 1
    _one_hot(str(atom.GetHybridization()), HYBRIDIZATIONS, out, offset)
    return out


def bond_features(bond: Any) -> np.ndarray:
    """One RDKit bond -> ``(BOND_FEATURES,)``: bond type one-hot (a dative or other bond type sets none of
    the four), conjugated, in a ring."""
    out = np.zeros(BOND_FEATURES, dtype=np.float32)
    kind = str(bond.GetBondType())
    if kind in BOND_TYPES:
        out[BOND_TYPES.index(kind)] = 1.0
    out[len(BOND_TYPES)] = float(bond.GetIsConjugated())
    out[len(BOND_TYPES) + 1] = float(bond.IsInRing())
    return out


def atom_feature_slice(block: str) -> slice:
    """Columns of ``x`` that hold one feature block, e.g. ``x[:, atom_feature_slice("aromatic")]``."""
    offset = 0
    for name, width in ATOM_BLOCKS:
        if name == block:
            return slice(offset, offset + width)
        offset += width
    raise KeyError(f"unknown atom feature block {block!r}; blocks are {[name for name, _ in ATOM_BLOCKS]}")


def mol_to_graph(mol: Mol, name: str = "molecule") -> Graph:
    """An RDKit molecule -> :class:`Graph` with ``x (atoms, ATOM_FEATURES)``, ``edge_index (2, 2 * bonds)``
    and ``edge_attr (2 * bonds, BOND_FEATURES)``."""
    x = np.stack([atom_features(atom) for atom in mol.GetAtoms()])
    pairs, attributes = [], []
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        features = bond_features(bond)
        pairs += [(i, j), (j, i)]
        attributes += [features, features]
    edge_index = torch.tensor(pairs, dtype=torch.int64).reshape(-1, 2).t().contiguous()
    edge_attr = (torch.from_numpy(np.stack(attributes)) if attributes
                 else torch.zeros((0, BOND_FEATURES), dtype=torch.float32))
    return Graph(edge_index=edge_index, num_nodes=mol.GetNumAtoms(), x=torch.from_numpy(x), edge_attr=edge_attr,
                 name=name)


def smiles_to_graph(smiles: str, featurizer: Featurizer = "gnnseg") -> Graph:
    """Featurize one SMILES string (raises :class:`InvalidSmilesError` when RDKit rejects it): gnnseg's
    one-hot features, or OGB's ``smiles2graph`` codes with ``featurizer="ogb"``."""
    check_featurizer(featurizer)
    mol = parse_smiles(smiles)
    if featurizer == "ogb":
        return ogb_smiles_to_graph(smiles.strip())
    return mol_to_graph(mol, name=smiles.strip())


def murcko_scaffold(smiles_or_mol: str | Mol, include_chirality: bool = False) -> str:
    """The Bemis-Murcko scaffold as canonical SMILES (``""`` for an acyclic molecule), via RDKit's
    ``MurckoScaffold.MurckoScaffoldSmiles``."""
    require_rdkit()
    from rdkit.Chem.Scaffolds import MurckoScaffold

    mol = parse_smiles(smiles_or_mol) if isinstance(smiles_or_mol, str) else smiles_or_mol
    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=include_chirality)


@dataclass(frozen=True)
class SkippedRow:
    """A CSV row that was not used: ``row`` counts data rows from 0 (the header excluded, as pandas does);
    ``line`` is the line number in the file (the header is line 1)."""

    row: int
    line: int
    smiles: str
    reason: str

    def __str__(self) -> str:
        return f"row {self.row} (line {self.line}): {self.smiles!r}: {self.reason}"


def featurize_smiles(smiles: Sequence[str], lines: Sequence[int] | None = None, featurizer: Featurizer = "gnnseg"
                     ) -> tuple[list[Graph], list[int], list[SkippedRow]]:
    """Featurize many SMILES with ``featurizer``; invalid ones are skipped and reported, never raised.

    Returns ``(graphs, kept_rows, skipped)``: ``graphs[k]`` belongs to input row ``kept_rows[k]``.
    ``lines[row]`` is the file line of each row, for the report (default ``row + 2``: a CSV with a header).
    """
    graphs, kept, skipped = [], [], []
    for row, text in enumerate(smiles):
        try:
            graphs.append(smiles_to_graph(text, featurizer))
        except InvalidSmilesError as exc:
            line = row + 2 if lines is None else int(lines[row])
            skipped.append(SkippedRow(row=row, line=line, smiles=text, reason=exc.reason))
            continue
        kept.append(row)
    return graphs, kept, skipped
