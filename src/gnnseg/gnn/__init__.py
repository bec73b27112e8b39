"""Graph neural networks: graphs and datasets, layers, models, training tasks."""

from gnnseg.gnn.graph import Graph, GraphValidationError

__all__ = ["Graph", "GraphValidationError"]
