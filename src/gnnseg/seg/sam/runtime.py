"""How a long-lived process (the service) runs a model: its decoder's dtype, a compiled decoder, and an embedding
cache sized by memory rather than by count. One function, :func:`service_predictor`, beside
:func:`~gnnseg.seg.sam.inference.chain.make_predictor`, which it calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from gnnseg.seg.sam.inference.augmented_predictor import symmetries
from gnnseg.seg.sam.inference.chain import make_predictor
from gnnseg.seg.sam.shipped import ModelChoice


@dataclass(frozen=True)
class ModelOptions:
    """How the service runs its model's decoder (which model and how it answers: :class:`ModelChoice`)."""

    decoder_dtype: Literal["float32", "bfloat16"] = "float32"
    """bfloat16: the mask decoder in bfloat16 (PyTorch models only)."""
    compile_decoder: bool = False
    """Compile the mask decoder for single boxes (:func:`compile_single_prompt_decoder`; PyTorch models only)."""


def service_predictor(model, choice: ModelChoice, options: ModelOptions, cache_bytes: int):
    """``choice``'s predictor around ``model`` with its decoder run as ``options`` say and an embedding cache of
    about ``cache_bytes`` (``model`` is changed in place by a bfloat16 or compiled decoder)."""
    dtype = options.decoder_dtype
    wanted = [text for text, asked in ((f"a {dtype} decoder", dtype != "float32"),
                                       ("a compiled decoder", options.compile_decoder)) if asked]
    if wanted and not hasattr(model, "mask_decoder"):
        raise ValueError(f"{' and '.join(wanted)}: only for PyTorch models, not an ONNX export")
    if dtype != "float32":
        import torch  # only here: a service over an ONNX export runs without torch

        model.mask_decoder.to(getattr(torch, dtype))
    config = model.config
    # the cached embeddings are in the decoder's dtype (ONNX exports: float32); each image keeps all its copies
    itemsize = model.decoder_dtype.itemsize if hasattr(model, "decoder_dtype") else 4
    image_bytes = itemsize * config.prompt_dim * config.embedding_size ** 2 * len(symmetries(choice.augmentation))
    predictor = choice.predictor(model, cache_size=max(1, cache_bytes // image_bytes))
    if options.compile_decoder:
        compile_single_prompt_decoder(model)
    return predictor


def compile_single_prompt_decoder(model) -> None:
    """Compile ``model``'s mask decoder (in place) for one prompt at a time, a viewer's box; several prompts in one
    call keep the eager decoder, so no count of boxes triggers a recompilation.

    The warm-up goes through a predictor of its own on a blank image, so the compiled graph sees what requests
    bring (inference tensors, the encoder's memory layout, the model's device) and the first request does not
    compile again.
    """
    import torch

    decoder = model.mask_decoder
    eager = decoder.forward
    compiled = torch.compile(eager, dynamic=False)

    def forward(image_embeddings, image_pe, sparse, dense, multimask_output):
        run = compiled if sparse.shape[0] == 1 else eager
        return run(image_embeddings, image_pe, sparse, dense, multimask_output)

    decoder.forward = forward
    size = model.config.image_size
    warm_up = make_predictor(model, cache_size=0)
    warm_up.set_image(np.zeros((size, size, 3), dtype=np.uint8))
    warm_up.predict(boxes=np.array([[0.0, 0.0, size / 2, size / 2]]))
