"""The HTTP service and web page for box-prompted segmentation (``gnnseg serve``; docs/serve.md)."""
