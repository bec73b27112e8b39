"""Scoring a saved node classifier, whichever trainer saved it (``gnnseg gnn evaluate``).

The full-batch trainer (:mod:`~gnnseg.gnn.tasks.node_runs`) and the mini-batch trainer
(:mod:`~gnnseg.gnn.tasks.minibatch_runs`) save models in formats of their own and score them their own way; this
module, above both, reads a checkpoint's format and hands it to the trainer that wrote it.
"""

from __future__ import annotations

import os
from typing import Any

from gnnseg.core import CheckpointError, load_checkpoint
from gnnseg.gnn.tasks import minibatch_runs, node_runs


def evaluate_saved_classifier(path: str | os.PathLike, root: str | os.PathLike | None,
                              dataset: str | None = None) -> dict[str, Any]:
    """Accuracy on its dataset's splits (or ``dataset``'s) of the node classifier saved at ``path``."""
    evaluators = {node_runs.CHECKPOINT_FORMAT: node_runs.evaluate_checkpoint,
                  minibatch_runs.MODEL_FORMAT: minibatch_runs.evaluate_minibatch_checkpoint}
    saved = load_checkpoint(path, required_keys=("format",))["format"]
    if saved not in evaluators:
        raise CheckpointError(f"{path} is a {saved!r} checkpoint, not a node classifier (known: "
                              f"{', '.join(evaluators)})")
    return evaluators[saved](path, root, dataset)
