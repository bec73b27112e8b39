"""The optional ``ogb`` package (Open Graph Benchmark, Hu et al., NeurIPS 2020), imported only where it is used.

gnnseg's core never needs it: OGB's metrics have an equal implementation here (``ogb_evaluation``) and OGB's
molecule features need it only while featurizing (``--featurizer ogb``); models never import it.
Importing ogb 1.3.6 starts a background thread that asks PyPI whether a newer ogb exists (its ``outdated``
check); offline it fails silently.
"""

from __future__ import annotations

import importlib
from types import ModuleType

OGB_INSTALL_HINT = "pip install 'gnnseg[ogb]' (or pip install ogb==1.3.6)"


def require_ogb(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (``"ogb.utils"``, ``"ogb.nodeproppred"``, ...) or raise a one-line ImportError that
    says what needed it (``purpose``) and how to install ogb."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{purpose} needs the ogb package: {OGB_INSTALL_HINT}") from exc
