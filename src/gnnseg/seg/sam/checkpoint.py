"""Reading and writing SAM / MedSAM weights.

Three file layouts arrive in practice (a Hugging Face ``transformers`` folder is the fourth:
:mod:`gnnseg.seg.sam.hf_checkpoint`):

- **official**: a flat state dict with SAM's key names (``image_encoder.*``, ``prompt_encoder.*``,
  ``mask_decoder.*``), as in ``sam_vit_b_01ec64.pth`` and ``medsam_vit_b.pth``;
- **training**: ``{"model": state_dict, "optimizer": ..., "epoch": ...}``, with ``module.`` prefixes when saved
  from DistributedDataParallel (MedSAM's ``train_multi_gpus.py``; the cause of its "Missing key(s)" reports);
- **gnnseg**: ``{"format": "gnnseg-sam", "config": ..., "model": ..., "meta": ...}``, which rebuilds itself.

Every load is ``weights_only=True`` and exact: a missing, unexpected or wrongly shaped tensor is an error that names
it. A flat checkpoint carries no configuration, so the architecture is read off the tensor shapes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gnnseg.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gnnseg.seg.sam.modeling.config import Preprocessing
from gnnseg.seg.sam.modeling.sam import Normalization, Sam, SamConfig, build_sam, with_input_chain

FORMAT = "gnnseg-sam"
_DDP_PREFIX = "module."


def unwrap_state_dict(payload: dict[str, Any]) -> tuple[dict[str, Tensor], str]:
    """The model's tensors from any of the three layouts, ``module.`` prefixes removed, and the layout's name."""
    state, layout = payload, "official"
    for wrapper in ("model", "state_dict"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            layout = "gnnseg" if payload.get("format") == FORMAT else "training"
            break
    tensors = {key: value for key, value in state.items() if isinstance(value, Tensor)}
    if not tensors:
        raise CheckpointError(f"no tensors found; top-level keys are {sorted(payload)[:10]}")
    if all(key.startswith(_DDP_PREFIX) for key in tensors):
        tensors = {key[len(_DDP_PREFIX):]: value for key, value in tensors.items()}
    return tensors, layout


def config_from_state_dict(state: dict[str, Tensor], normalization: Normalization = "imagenet") -> SamConfig:
    """Infer the architecture of a flat SAM, MedSAM, MobileSAM or Lite MedSAM state dict from its tensor shapes.

    Attention head counts leave no trace in ViT weights: the encoder's follow from the relative-position tables
    (their width is the head dimension); the decoder's are taken as SAM's 8 (the only value any released SAM,
    MedSAM or fine-tune uses). TinyViT's heads are the rows of its attention-bias tables. A TinyViT embedding
    grid is not stored either: it is taken as the 64 x 64 of MobileSAM and Lite MedSAM.
    """
    try:
        decoder_depth = 1 + max(int(m.group(1)) for key in state
                                if (m := re.match(r"mask_decoder\.transformer\.layers\.(\d+)\.", key)))
        common = {
            "prompt_dim": state["image_encoder.neck.0.weight"].shape[0],
            "decoder_depth": decoder_depth,
            "decoder_heads": 8,
            "decoder_mlp_dim": state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0],
            "iou_head_hidden": state["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0],
            "mask_in_chans": state["prompt_encoder.mask_downscaling.3.weight"].shape[0],
            "normalization": normalization,
        }
        if "image_encoder.patch_embed.seq.0.c.weight" in state:
            return SamConfig(**_tiny_vit_fields(state), **common)
        patch_weight = state["image_encoder.patch_embed.proj.weight"]
        encoder_dim, _, patch, _ = patch_weight.shape
        grid = state["image_encoder.pos_embed"].shape[1]
        depth = 1 + max(int(m.group(1)) for key in state
                        if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", key)))
        table_lengths = [state[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0] for i in range(depth)]
        head_dim = state["image_encoder.blocks.0.attn.rel_pos_h"].shape[1]
        global_blocks = tuple(i for i, length in enumerate(table_lengths) if length == 2 * grid - 1)
        windowed = [length for length in table_lengths if length != 2 * grid - 1]
        return SamConfig(
            image_size=grid * patch,
            patch_size=patch,
            encoder_dim=encoder_dim,
            encoder_depth=depth,
            encoder_heads=encoder_dim // head_dim,
            global_attention=global_blocks,
            window_size=(windowed[0] + 1) // 2 if windowed else 14,
            **common,
        )
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"not a SAM state dict: cannot read its architecture ({exc!r})") from exc


_TINY_VIT_GRID = 64


def _tiny_vit_fields(state: dict[str, Tensor]) -> dict[str, Any]:
    """TinyViT's stage widths, depths, heads and windows, and its stride (a 1x1 stem is Lite MedSAM's stride 4).

    Stage 0 is convolutional: its head count and window are unused and keep the registry's values.
    """
    dims = [state["image_encoder.patch_embed.seq.2.c.weight"].shape[0]]
    depths, heads, windows = [], [], []
    for stage in range(4):
        blocks = {int(m.group(1)) for key in state
                  if (m := re.match(rf"image_encoder\.layers\.{stage}\.blocks\.(\d+)\.", key))}
        depths.append(len(blocks))
        if stage > 0:
            biases = state[f"image_encoder.layers.{stage}.blocks.0.attn.attention_biases"]
            heads.append(biases.shape[0])
            windows.append(round(biases.shape[1] ** 0.5))
            dims.append(state[f"image_encoder.layers.{stage}.blocks.0.attn.proj.weight"].shape[0])
    stem_kernel = state["image_encoder.patch_embed.seq.0.c.weight"].shape[-1]
    patch = 4 if stem_kernel == 1 else 16
    return {"encoder": "tiny_vit", "image_size": _TINY_VIT_GRID * patch, "patch_size": patch,
            "stage_dims": tuple(dims), "stage_depths": tuple(depths),
            "stage_heads": (SamConfig.stage_heads[0], *heads), "stage_windows": (SamConfig.stage_windows[0], *windows),
            "image_layout": "padded" if patch == 4 else None}


def load_state_exactly(model: torch.nn.Module, state: dict[str, Tensor]) -> None:
    """``load_state_dict`` that reports every missing, unexpected and mis-shaped tensor by name and shape."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
                        for key in set(expected) & set(state) if state[key].shape != expected[key].shape)
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            shown = ", ".join(items[:8]) + (f" (+{len(items) - 8} more)" if len(items) > 8 else "")
            problems.append(f"{len(items)} {label}: {shown}")
    if problems:
        raise CheckpointError("checkpoint does not fit the model; " + "; ".join(problems))
    model.load_state_dict({key: value.float() for key, value in state.items()})


def normalization_from_layout(config: SamConfig) -> Normalization | None:
    """The input normalisation that a flat checkpoint's architecture implies, or ``None`` where it does not tell.

    Lite MedSAM's TinyViT (stride-4 stem at 256 input) exists only as MedSAM's student: min-max. MobileSAM's TinyViT
    (stride 16 at 1024) is SAM's student: ImageNet statistics. A ViT says nothing: MedSAM is SAM's ViT-B with the
    same tensors and another normalisation.
    """
    if config.encoder == "tiny_vit":
        return "minmax" if config.patch_size == 4 else "imagenet"
    return None


def load_sam(path: str | os.PathLike, *, normalization: Normalization | None = None,
             preprocessing: Preprocessing | None = None) -> tuple[Sam, dict[str, Any]]:
    """Load any SAM / MedSAM checkpoint; returns the model (in eval mode) and the checkpoint's metadata.

    gnnseg checkpoints carry their normalisation; a flat or training checkpoint's is read off its architecture
    (:func:`normalization_from_layout`) and refused where that is ambiguous (a ViT: SAM and MedSAM look alike).
    A folder is read as a Hugging Face ``transformers`` SAM (``config.json`` + ``model.safetensors``,
    :func:`gnnseg.seg.sam.hf_checkpoint.load_hf_folder`). ``normalization`` and ``preprocessing`` override what the
    checkpoint implies.
    """
    path = Path(path)
    if path.is_dir():
        from gnnseg.seg.sam.hf_checkpoint import load_hf_folder

        return load_hf_folder(path, normalization=normalization, preprocessing=preprocessing)
    payload = load_checkpoint(path)
    state, layout = unwrap_state_dict(payload)
    if layout == "gnnseg":
        config = SamConfig.from_dict(payload["config"])
        meta = dict(payload.get("meta", {}))
    else:
        config = config_from_state_dict(state)
        normalization = normalization or normalization_from_layout(config)
        if normalization is None:
            raise CheckpointError(f"{path}: a ViT checkpoint does not say how its input is normalised (SAM and "
                                  "MedSAM have the same tensors): give normalization 'minmax' for MedSAM and its "
                                  "fine-tunes or 'imagenet' for SAM (--normalization on the command line)")
        meta = {"source_layout": layout}
    try:
        config = with_input_chain(config, normalization, preprocessing)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    model = build_sam(config)
    try:
        load_state_exactly(model, state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return model.eval(), meta


def save_sam(model: Sam, path: str | os.PathLike, *, meta: dict[str, Any] | None = None,
             half_precision: bool = False) -> Path:
    """Write a self-describing gnnseg checkpoint (atomically). ``half_precision`` halves the file size."""
    dtype = torch.float16 if half_precision else torch.float32
    state = {key: value.detach().to("cpu", dtype) for key, value in model.state_dict().items()}
    return save_checkpoint({"format": FORMAT, "config": model.config.to_dict(), "model": state,
                            "meta": meta or {}}, path)


DECODER_FORMAT = "gnnseg-sam-mask-decoder"


def save_mask_decoder(model: Sam, path: str | os.PathLike, *, base: str, base_sha256: str,
                      meta: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s mask decoder alone, in half precision, tied to the released weights it was tuned over
    (``base``, identified by the SHA-256 of their file), so that gnnseg ships what it trained and nothing else."""
    state = {key: value.detach().to("cpu", torch.float16) for key, value in model.mask_decoder.state_dict().items()}
    return save_checkpoint({"format": DECODER_FORMAT, "base": base, "base_sha256": base_sha256, "model": state,
                            "meta": meta or {}}, path)


def load_mask_decoder(model: Sam, path: str | os.PathLike, *, base_sha256: str) -> dict[str, Any]:
    """Replace ``model``'s mask decoder by the one in ``path`` (:func:`save_mask_decoder`), exactly, after checking
    that it was tuned over the weights whose file has ``base_sha256``; returns its metadata."""
    payload = load_checkpoint(path)
    if payload.get("format") != DECODER_FORMAT:
        raise CheckpointError(f"{path} is not a gnnseg mask decoder (format {payload.get('format')!r})")
    if payload["base_sha256"] != base_sha256:
        raise CheckpointError(f"{path} was tuned over other weights (SHA-256 {payload['base_sha256']}) than the ones "
                              f"installed ({base_sha256})")
    try:
        load_state_exactly(model.mask_decoder, payload["model"])
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return dict(payload.get("meta", {}))


def export_official(model: Sam, path: str | os.PathLike) -> Path:
    """Write the flat state dict that the official ``segment-anything`` builders load (MedSAM's ``ckpt_convert``).

    A flat state dict carries no configuration, so a model whose architecture its shapes do not pin down (a decoder
    with other than 8 heads, TinyViT mergings other than MobileSAM's, a box-centred window) would reload as another
    model without an error; such models are refused, with the fields that would be lost: keep them in the gnnseg
    layout (:func:`save_sam`).
    """
    state = {key: value.detach().cpu().float() for key, value in model.state_dict().items()}
    lost = _fields_lost_in_flat_layout(model.config, config_from_state_dict(state, model.config.normalization))
    if lost:
        raise CheckpointError(f"the flat official layout cannot describe this model: reloading would change "
                              f"{'; '.join(lost)}; save it with save_sam instead")
    return save_checkpoint(state, path)


_VIT_FIELDS = ("encoder_dim", "encoder_depth", "encoder_heads", "global_attention", "window_size")
_TINY_VIT_FIELDS = ("stage_dims", "stage_depths", "stage_heads", "stage_windows", "merge_strides")


def _fields_lost_in_flat_layout(config: SamConfig, reloaded: SamConfig) -> list[str]:
    """``field: ours -> reloaded`` for every field that shapes the model and would read back differently."""
    def architecture(values: SamConfig) -> dict[str, Any]:
        fields = values.to_dict()
        del fields["preprocessing"]  # how inputs are made, not what the tensors are; given again at load
        for name in _VIT_FIELDS if values.encoder == "tiny_vit" else _TINY_VIT_FIELDS:
            del fields[name]
        if values.encoder == "tiny_vit":  # stage 0 is convolutional: its heads and window are never used
            fields["stage_heads"], fields["stage_windows"] = fields["stage_heads"][1:], fields["stage_windows"][1:]
        return fields

    ours, theirs = architecture(config), architecture(reloaded)
    return [f"{name}: {ours[name]} -> {theirs.get(name)}" for name in ours if ours[name] != theirs.get(name)]


def convert_training_checkpoint(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Turn a training checkpoint (``{"model": ...}``, ``module.`` prefixes) into the flat official layout."""
    state, _ = unwrap_state_dict(load_checkpoint(source))
    config_from_state_dict(state)  # refuse anything that is not a SAM
    return save_checkpoint({key: value.float() for key, value in state.items()}, target)
