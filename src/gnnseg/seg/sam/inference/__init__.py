"""Segmenting with a model: images to model inputs, prompts checked once at the entrance, the PyTorch and ONNX
predictors and the wrappers around them (test-time augmentation, zoom), 3D propagation. Only the PyTorch predictor
imports torch, so an ONNX export segments without it."""
