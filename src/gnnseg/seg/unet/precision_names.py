"""The names of the precisions a U-Net's forward passes run in, free of torch: the command line checks
``--precision`` against them without importing torch, which a torch-free ONNX prediction must not do."""

PRECISION_NAMES = ("float32", "bfloat16")
