"""Hugging Face ``transformers`` SAM checkpoints: read them into gnnseg's :class:`Sam`, write gnnseg models as them.

A Hugging Face SAM is a folder with ``config.json`` (``"model_type": "sam"``, ``"architectures": ["SamModel"]``) and
``model.safetensors`` (or shards listed in ``model.safetensors.index.json``), as ``SamModel.save_pretrained`` writes
it. Reading takes JSON and safetensors only: no pickle, no code from the folder, and no ``transformers`` (gnnseg
builds its own :class:`SamConfig` from ``config.json``). A folder holding only ``pytorch_model.bin`` (a pickle) is
refused. ``transformers`` is needed nowhere here: :func:`sam_from_transformers` reads an in-memory ``SamModel``
through its ``config.to_dict()`` and ``state_dict()``.

Both layouts hold the same tensors; :data:`KEY_MAPPING` renames one into the other (and back), rule by rule:

- image encoder: HF's ``vision_encoder.layers.i`` are gnnseg's ``image_encoder.blocks.i``, ``layer_norm1/2`` are
  ``norm1/2``; the attention's fused ``qkv``, ``proj`` and the decomposed relative-position tables ``rel_pos_h/w``
  have the same names and shapes in both, and so does the absolute ``pos_embed`` ``(1, S/p, S/p, D)``; the neck's
  ``conv1, layer_norm1, conv2, layer_norm2`` are the ``neck.0 .. neck.3`` of a Sequential;
- prompt encoder: HF keeps the random Fourier matrix twice, tied: ``shared_image_embedding.positional_embedding``
  (the image grid's encoding) and ``prompt_encoder.shared_embedding.positional_embedding`` (the prompts'); gnnseg has
  one, ``prompt_encoder.pe_layer.positional_encoding_gaussian_matrix``, for both, so the two must be equal (tied
  ones are; ``save_pretrained`` writes only the first). ``point_embed.k`` are ``point_embeddings.k``;
  ``mask_embed.conv1, layer_norm1, conv2, layer_norm2, conv3`` are ``mask_downscaling.0, 1, 3, 4, 6`` (the GELUs
  between them hold no weights); ``no_mask_embed`` and ``not_a_point_embed`` keep their names;
- mask decoder: the two-way transformer's ``layer_norm1..4`` and ``layer_norm_final_attn`` are ``norm1..4`` and
  ``norm_final_attn`` (attentions, ``q/k/v/out_proj`` and ``mlp.lin1/2`` keep their names);
  ``upscale_conv1, upscale_layer_norm, upscale_conv2`` are ``output_upscaling.0, 1, 3``; the hypernetwork MLPs and
  the IoU head (3 layers each) name their layers ``proj_in, layers.0, proj_out`` where gnnseg says
  ``layers.0, 1, 2``; ``iou_token`` and ``mask_tokens`` keep their names.

The configuration maps field by field (:data:`CONFIG_FIELDS`: ``vision_config.hidden_size`` is ``encoder_dim``,
``global_attn_indexes`` is ``global_attention`` ...). What gnnseg's SAM cannot be (another activation, no relative
positions, other than 3 multimask outputs, a ``mlp_dim`` other than 4 x ``hidden_size`` ...) is refused, naming the
field. The two-way transformer's LayerNorm eps travels as ``decoder_norm_eps``: the original SAM code (and gnnseg's
default) uses PyTorch's 1e-5, HF's converted checkpoints say ``mask_decoder_config.layer_norm_eps`` 1e-6, and each
model keeps its own, so both sides compute the same.

Input normalisation: HF's ``SamImageProcessor`` rescales to [0, 1] and applies the ImageNet mean and standard
deviation, after resizing the longest side to the input size and padding (gnnseg's ``imagenet`` normalisation with
the ``padded`` layout). A folder's ``preprocessor_config.json`` (or ``processor_config.json``) is read where present
and refused where it asks for another normalisation; an export records gnnseg's own input chain (min-max
normalisation, square resize, box-centred crops) in ``config.json`` under ``gnnseg_input``, which ``transformers``
keeps and ignores, and writes ``preprocessor_config.json`` only for models that HF's processor feeds correctly.
TinyViT models (MobileSAM, Lite MedSAM) have no ``SamModel`` layout and are refused.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gnnseg.core.atomic import atomic_folder
from gnnseg.core.checkpoint import CheckpointError
from gnnseg.seg.io.intensity import IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_STD
from gnnseg.seg.sam.checkpoint import load_state_exactly
from gnnseg.seg.sam.hf_layout import (
    CONFIG_FILE,
    PICKLED_WEIGHTS,
    PREPROCESSOR_FILE,
    PROCESSOR_FILE,
    WEIGHTS_FILE,
    WEIGHTS_INDEX_FILE,
    is_hugging_face_folder,
)
from gnnseg.seg.sam.modeling.config import Normalization, Preprocessing, SamConfig, with_input_chain
from gnnseg.seg.sam.modeling.sam import Sam, build_sam

INPUT_CHAIN_KEY = "gnnseg_input"
"""``config.json``'s key for how a gnnseg model's inputs are made (normalisation, layout, crop, preprocessing)."""

IMAGE_POSITIONAL_KEY = "shared_image_embedding.positional_embedding"
PROMPT_POSITIONAL_KEY = "prompt_encoder.shared_embedding.positional_embedding"
"""HF's two tied copies of the random Fourier matrix: the image grid's encoding and the prompts'."""

KEY_MAPPING: tuple[tuple[str, str], ...] = (
    # (Hugging Face prefix, gnnseg prefix); "#" stands for a block or token index; the first matching rule wins.
    ("vision_encoder.patch_embed.projection.", "image_encoder.patch_embed.proj."),
    ("vision_encoder.pos_embed", "image_encoder.pos_embed"),
    ("vision_encoder.layers.#.layer_norm1.", "image_encoder.blocks.#.norm1."),
    ("vision_encoder.layers.#.layer_norm2.", "image_encoder.blocks.#.norm2."),
    ("vision_encoder.layers.#.", "image_encoder.blocks.#."),  # attn.qkv, attn.proj, attn.rel_pos_h/w, mlp.lin1/2
    ("vision_encoder.neck.conv1.", "image_encoder.neck.0."),
    ("vision_encoder.neck.layer_norm1.", "image_encoder.neck.1."),
    ("vision_encoder.neck.conv2.", "image_encoder.neck.2."),
    ("vision_encoder.neck.layer_norm2.", "image_encoder.neck.3."),
    (IMAGE_POSITIONAL_KEY, "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"),
    ("prompt_encoder.point_embed.#.", "prompt_encoder.point_embeddings.#."),
    ("prompt_encoder.mask_embed.conv1.", "prompt_encoder.mask_downscaling.0."),
    ("prompt_encoder.mask_embed.layer_norm1.", "prompt_encoder.mask_downscaling.1."),
    ("prompt_encoder.mask_embed.conv2.", "prompt_encoder.mask_downscaling.3."),
    ("prompt_encoder.mask_embed.layer_norm2.", "prompt_encoder.mask_downscaling.4."),
    ("prompt_encoder.mask_embed.conv3.", "prompt_encoder.mask_downscaling.6."),
    ("mask_decoder.transformer.layers.#.layer_norm1.", "mask_decoder.transformer.layers.#.norm1."),
    ("mask_decoder.transformer.layers.#.layer_norm2.", "mask_decoder.transformer.layers.#.norm2."),
    ("mask_decoder.transformer.layers.#.layer_norm3.", "mask_decoder.transformer.layers.#.norm3."),
    ("mask_decoder.transformer.layers.#.layer_norm4.", "mask_decoder.transformer.layers.#.norm4."),
    ("mask_decoder.transformer.layer_norm_final_attn.", "mask_decoder.transformer.norm_final_attn."),
    ("mask_decoder.upscale_conv1.", "mask_decoder.output_upscaling.0."),
    ("mask_decoder.upscale_layer_norm.", "mask_decoder.output_upscaling.1."),
    ("mask_decoder.upscale_conv2.", "mask_decoder.output_upscaling.3."),
    ("mask_decoder.output_hypernetworks_mlps.#.proj_in.", "mask_decoder.output_hypernetworks_mlps.#.layers.0."),
    ("mask_decoder.output_hypernetworks_mlps.#.layers.0.", "mask_decoder.output_hypernetworks_mlps.#.layers.1."),
    ("mask_decoder.output_hypernetworks_mlps.#.proj_out.", "mask_decoder.output_hypernetworks_mlps.#.layers.2."),
    ("mask_decoder.iou_prediction_head.proj_in.", "mask_decoder.iou_prediction_head.layers.0."),
    ("mask_decoder.iou_prediction_head.layers.0.", "mask_decoder.iou_prediction_head.layers.1."),
    ("mask_decoder.iou_prediction_head.proj_out.", "mask_decoder.iou_prediction_head.layers.2."),
)
"""Hugging Face -> gnnseg key prefixes; a key that no rule matches has the same name in both layouts."""

CONFIG_FIELDS: tuple[tuple[str, str, str], ...] = (
    # (gnnseg SamConfig field, HF sub-config, HF key)
    ("image_size", "vision_config", "image_size"),
    ("patch_size", "vision_config", "patch_size"),
    ("encoder_dim", "vision_config", "hidden_size"),
    ("encoder_depth", "vision_config", "num_hidden_layers"),
    ("encoder_heads", "vision_config", "num_attention_heads"),
    ("global_attention", "vision_config", "global_attn_indexes"),
    ("window_size", "vision_config", "window_size"),
    ("prompt_dim", "vision_config", "output_channels"),
    ("mask_in_chans", "prompt_encoder_config", "mask_input_channels"),
    ("decoder_depth", "mask_decoder_config", "num_hidden_layers"),
    ("decoder_heads", "mask_decoder_config", "num_attention_heads"),
    ("decoder_mlp_dim", "mask_decoder_config", "mlp_dim"),
    ("iou_head_hidden", "mask_decoder_config", "iou_head_hidden_dim"),
    ("decoder_norm_eps", "mask_decoder_config", "layer_norm_eps"),
)
"""How gnnseg's architecture fields read off a Hugging Face SAM config (every other HF value follows from these:
:func:`hf_config_from_sam`)."""

HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "vision_config": {"hidden_size": 768, "output_channels": 256, "num_hidden_layers": 12, "num_attention_heads": 12,
                      "num_channels": 3, "image_size": 1024, "patch_size": 16, "hidden_act": "gelu",
                      "layer_norm_eps": 1e-6, "attention_dropout": 0.0, "qkv_bias": True, "mlp_ratio": 4.0,
                      "use_abs_pos": True, "use_rel_pos": True, "window_size": 14,
                      "global_attn_indexes": [2, 5, 8, 11], "num_pos_feats": 128, "mlp_dim": None},
    "prompt_encoder_config": {"hidden_size": 256, "image_size": 1024, "patch_size": 16, "mask_input_channels": 16,
                              "num_point_embeddings": 4, "hidden_act": "gelu", "layer_norm_eps": 1e-6},
    "mask_decoder_config": {"hidden_size": 256, "hidden_act": "relu", "mlp_dim": 2048, "num_hidden_layers": 2,
                            "num_attention_heads": 8, "attention_downsample_rate": 2, "num_multimask_outputs": 3,
                            "iou_head_depth": 3, "iou_head_hidden_dim": 256, "layer_norm_eps": 1e-6},
}
"""``transformers``' defaults for what a ``config.json`` leaves out (``SamVisionConfig``, ``SamPromptEncoderConfig``,
``SamMaskDecoderConfig``); keys outside these tables are not read by transformers' SAM either and are ignored."""

_IMAGENET_MEAN = tuple(round(value / 255, 6) for value in IMAGENET_PIXEL_MEAN)  # as HF writes them: on [0, 1]
_IMAGENET_STD = tuple(round(value / 255, 6) for value in IMAGENET_PIXEL_STD)


def _prefix_pattern(prefix: str) -> re.Pattern:
    return re.compile(re.escape(prefix).replace(re.escape("#"), r"(\d+)"))


_TO_GNNSEG = tuple((_prefix_pattern(hf), gnnseg) for hf, gnnseg in KEY_MAPPING)
_TO_HF = tuple((_prefix_pattern(gnnseg), hf) for hf, gnnseg in KEY_MAPPING)


def _rename(key: str, rules: tuple[tuple[re.Pattern, str], ...]) -> str:
    for pattern, template in rules:
        if match := pattern.match(key):
            return template.replace("#", match.group(1) if match.groups() else "") + key[match.end():]
    return key


def hf_to_gnnseg_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A Hugging Face ``SamModel`` state dict under gnnseg's names (:data:`KEY_MAPPING`).

    HF's two copies of the Fourier matrix become gnnseg's one; they must hold the same numbers.
    """
    state = dict(state)
    prompt_copy = state.pop(PROMPT_POSITIONAL_KEY, None)
    image_copy = state.get(IMAGE_POSITIONAL_KEY)
    if prompt_copy is not None:
        if image_copy is None:
            state[IMAGE_POSITIONAL_KEY] = prompt_copy
        elif prompt_copy.shape != image_copy.shape or not torch.equal(prompt_copy, image_copy):
            raise CheckpointError(f"{IMAGE_POSITIONAL_KEY} and {PROMPT_POSITIONAL_KEY} differ (an untied model): "
                                  "gnnseg's prompt encoder encodes the image grid and the prompts with one random "
                                  "Fourier matrix, so it cannot hold two")
    return {_rename(key, _TO_GNNSEG): value for key, value in state.items()}


def gnnseg_to_hf_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """gnnseg's ``Sam`` state dict under Hugging Face's names, the Fourier matrix once (as ``save_pretrained``
    writes it: transformers ties the prompt encoder's copy to it)."""
    return {_rename(key, _TO_HF): value for key, value in state.items()}


def _check_model_type(config: Mapping[str, Any]) -> None:
    """Refuse, in one message, any config but transformers' SamModel (SAM-HQ, SAM 2, a vision-only model ...)."""
    model_type = config.get("model_type")
    architectures = list(config.get("architectures") or [])
    if model_type != "sam" or any(name != "SamModel" for name in architectures):
        raise CheckpointError(f"config.json describes model_type {model_type!r} with architectures {architectures}: "
                              "gnnseg reads transformers' SamModel only (model_type 'sam', architectures "
                              "['SamModel']); SAM-HQ, SAM 2 and the vision-only SamVisionModel hold other tensors")


def _sections(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The three sub-configs with transformers' defaults for what they leave out, and its derived values applied
    (``mlp_dim`` from ``mlp_ratio`` where unset; a square ``[n, n]`` size as ``n``)."""
    sections = {}
    for name, defaults in HF_DEFAULTS.items():
        given = config.get(name) or {}
        if not isinstance(given, Mapping):
            raise CheckpointError(f"config.json {name} is a {type(given).__name__}, expected an object")
        section = {**defaults, **given}
        for key in ("image_size", "patch_size"):
            if key in section:
                section[key] = _square(section[key], f"{name}.{key}")
        sections[name] = section
    vision = sections["vision_config"]
    if vision["mlp_dim"] is None and isinstance(vision["hidden_size"], int) and isinstance(vision["mlp_ratio"],
                                                                                         int | float):
        vision["mlp_dim"] = int(vision["hidden_size"] * vision["mlp_ratio"])
    return sections


def _square(value: Any, name: str) -> Any:
    if isinstance(value, list | tuple):
        if len(value) != 2 or value[0] != value[1]:
            raise CheckpointError(f"config.json {name} is {list(value)}: gnnseg's SAM takes square inputs only")
        return value[0]
    return value


def sam_config_from_hf(config: Mapping[str, Any]) -> SamConfig:
    """gnnseg's architecture (ImageNet normalisation) from a Hugging Face SAM config: a ``config.json``'s contents
    or ``SamModel.config.to_dict()``.

    Every value transformers' SAM reads is checked against what gnnseg's SAM of that architecture is
    (:func:`hf_config_from_sam`); a difference is refused, naming the field (the two-way transformer's
    """
    _check_model_type(config)
    sections = _sections(config)
    values = {field: sections[section][key] for field, section, key in CONFIG_FIELDS}
    bad = [f"{section}.{key} = {values[field]!r}" for field, section, key in CONFIG_FIELDS
           if field not in ("global_attention", "decoder_norm_eps")
           and not _is_count(values[field], allow_zero=field == "window_size")]
    eps = values["decoder_norm_eps"]
    if not isinstance(eps, int | float) or isinstance(eps, bool) or not 0 < eps < 1:
        bad.append(f"mask_decoder_config.layer_norm_eps = {eps!r}")
    indexes = values["global_attention"]
    if not isinstance(indexes, list | tuple) or not all(_is_count(i, allow_zero=True) for i in indexes):
        bad.append(f"vision_config.global_attn_indexes = {indexes!r}")
    if bad:
        raise CheckpointError(f"config.json has values that are not counts (or, for an eps, not in (0, 1)): "
                              f"{', '.join(bad)}")
    try:
        architecture = SamConfig(**{**values, "global_attention": tuple(indexes)})
    except ValueError as exc:
        raise CheckpointError(f"config.json: {exc}") from None
    expected = hf_config_from_sam(architecture)
    problems = []
    for name, section in sections.items():
        for key, wanted in expected[name].items():
            if key in ("model_type", "mlp_ratio"):
                continue  # sub-config names are not checked; mlp_ratio matters only through mlp_dim (derived above)
            given = section[key]
            if _same(given, wanted):
                continue
            problems.append(f"{name}.{key} is {given!r} where gnnseg's SAM has {wanted!r}")
    if problems:
        raise CheckpointError("config.json describes a SAM that gnnseg's cannot build: " + "; ".join(problems))
    return architecture


def _is_count(value: Any, *, allow_zero: bool = False) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= (0 if allow_zero else 1)


def _same(given: Any, wanted: Any, tolerance: float = 1e-9) -> bool:
    """JSON values equal: numbers to a relative ``tolerance`` where ``wanted`` is a float, lists item by item."""
    if isinstance(wanted, list):
        return (isinstance(given, list | tuple) and len(given) == len(wanted)
                and all(_same(g, w, tolerance) for g, w in zip(given, wanted, strict=True)))
    if isinstance(wanted, float):
        return (isinstance(given, int | float) and not isinstance(given, bool)
                and math.isclose(given, wanted, rel_tol=tolerance))
    return type(given) is type(wanted) and given == wanted


def hf_config_from_sam(config: SamConfig) -> dict[str, Any]:
    """The Hugging Face ``config.json`` contents (architecture only) of a gnnseg ViT SAM; TinyViT is refused."""
    if config.encoder != "vit":
        raise CheckpointError(f"a {config.encoder!r} image encoder (MobileSAM, Lite MedSAM) has no transformers "
                              "SamModel layout, which holds SAM's ViT only; keep it in the gnnseg layout (save_sam) "
                              "or export it to ONNX (gnnseg seg export-onnx)")
    dim = config.prompt_dim
    return {
        "architectures": ["SamModel"],
        "model_type": "sam",
        "vision_config": {
            "model_type": "sam_vision_model", "hidden_size": config.encoder_dim, "output_channels": dim,
            "num_hidden_layers": config.encoder_depth, "num_attention_heads": config.encoder_heads,
            "num_channels": 3, "image_size": config.image_size, "patch_size": config.patch_size,
            "hidden_act": "gelu", "layer_norm_eps": 1e-6, "attention_dropout": 0.0, "qkv_bias": True,
            "mlp_ratio": 4.0, "mlp_dim": 4 * config.encoder_dim, "use_abs_pos": True, "use_rel_pos": True,
            "window_size": config.window_size, "global_attn_indexes": list(config.global_attention),
            "num_pos_feats": dim // 2,
        },
        "prompt_encoder_config": {
            "model_type": "sam_prompt_encoder", "hidden_size": dim, "image_size": config.image_size,
            "patch_size": config.patch_size, "mask_input_channels": config.mask_in_chans, "num_point_embeddings": 4,
            "hidden_act": "gelu", "layer_norm_eps": 1e-6,
        },
        "mask_decoder_config": {
            "model_type": "sam_mask_decoder", "hidden_size": dim, "hidden_act": "relu",
            "mlp_dim": config.decoder_mlp_dim, "num_hidden_layers": config.decoder_depth,
            "num_attention_heads": config.decoder_heads, "attention_downsample_rate": 2, "num_multimask_outputs": 3,
            "iou_head_depth": 3, "iou_head_hidden_dim": config.iou_head_hidden,
            "layer_norm_eps": config.decoder_norm_eps,
        },
    }


_INPUT_FIELDS = ("normalization", "image_layout", "crop_margin", "preprocessing")


def _input_chain(config: Mapping[str, Any], folder: Path | None,
                 normalization: Normalization | None) -> tuple[dict[str, Any], str]:
    """How the checkpoint's inputs are made (SamConfig fields) and where that was read: gnnseg's own record, else
    the folder's image processor settings (unless ``normalization`` is given), else SamImageProcessor's defaults."""
    recorded = config.get(INPUT_CHAIN_KEY)
    if recorded is not None:
        if not isinstance(recorded, Mapping) or set(recorded) - set(_INPUT_FIELDS):
            raise CheckpointError(f"config.json {INPUT_CHAIN_KEY} must be an object with keys among {_INPUT_FIELDS}, "
                                  f"got {recorded!r}")
        return dict(recorded), f"config.json {INPUT_CHAIN_KEY}"
    if normalization is not None:
        return {}, "given"
    settings, source = _image_processor_settings(folder)
    if settings is None:
        return {"normalization": "imagenet"}, "SamImageProcessor defaults (ImageNet mean and std)"
    problems = _imagenet_mismatches(settings)
    if problems:
        raise CheckpointError(f"{source} normalises inputs otherwise than gnnseg can ({'; '.join(problems)}): give "
                              "the normalization the weights expect, 'imagenet' or 'minmax' (--normalization)")
    return {"normalization": "imagenet"}, source


def _image_processor_settings(folder: Path | None) -> tuple[dict[str, Any] | None, str]:
    """``preprocessor_config.json``, or the ``image_processor`` of ``processor_config.json``, where one exists."""
    if folder is None:
        return None, ""
    for name, inner in ((PREPROCESSOR_FILE, None), (PROCESSOR_FILE, "image_processor")):
        path = folder / name
        if path.is_file():
            settings = _read_json(path)
            settings = settings.get(inner) if inner else settings
            if isinstance(settings, Mapping):
                return dict(settings), name
    return None, ""


def _imagenet_mismatches(settings: Mapping[str, Any]) -> list[str]:
    """Where an image processor's settings depart from ImageNet normalisation of 0..255 pixels."""
    wanted = {"do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
              "image_mean": list(_IMAGENET_MEAN), "image_std": list(_IMAGENET_STD)}
    return [f"{key} is {settings[key]!r}, ImageNet normalisation has {value!r}"
            for key, value in wanted.items() if not _same(settings.get(key, value), value, tolerance=1e-6)]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} holds a {type(value).__name__}, expected a JSON object")
    return value


def _model_config(architecture: SamConfig, config: Mapping[str, Any], folder: Path | None,
                  normalization: Normalization | None, preprocessing: Preprocessing | None) -> tuple[SamConfig, str]:
    """``architecture`` with the checkpoint's input chain (overridden by ``normalization`` / ``preprocessing``), and
    where the normalisation was read."""
    chain, source = _input_chain(config, folder, normalization)
    try:
        return with_input_chain(replace(architecture, **chain), normalization, preprocessing), source
    except (TypeError, ValueError) as exc:
        raise CheckpointError(str(exc)) from None


def _loaded_model(model_config: SamConfig, hf_state: Mapping[str, Tensor]) -> Sam:
    """gnnseg's model of ``model_config`` (eval mode) holding HF's tensors, renamed; every tensor must fit."""
    state = hf_to_gnnseg_keys(hf_state)
    try:
        model = build_sam(model_config)
    except ValueError as exc:  # e.g. heads that do not divide the width
        raise CheckpointError(f"the config describes no buildable SAM: {exc}") from None
    try:
        load_state_exactly(model, state)
    except CheckpointError as exc:
        raise CheckpointError(f"the weights do not fit config.json (tensor names as gnnseg's, see "
                              f"gnnseg.seg.sam.hf_checkpoint.KEY_MAPPING): {exc}") from None
    return model.eval()


def read_safetensors_weights(folder: Path) -> dict[str, Tensor]:
    """The tensors of ``model.safetensors`` (or of the shards its index lists), read without unpickling."""
    single, index = folder / WEIGHTS_FILE, folder / WEIGHTS_INDEX_FILE
    if single.is_file():
        files = [single]
    elif index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, Mapping) or not weight_map:
            raise CheckpointError(f"{index} has no weight_map")
        names = sorted(set(weight_map.values()))
        strays = [name for name in names if not isinstance(name, str) or Path(name).name != name
                  or not name.endswith(".safetensors")]
        if strays:
            raise CheckpointError(f"{index} lists shards that are not safetensors files in the folder: {strays}")
        files = [folder / name for name in names]
    else:
        pickled = [name for name in PICKLED_WEIGHTS if (folder / name).exists()]
        if pickled:
            raise CheckpointError(f"{folder} holds {pickled[0]} but no {WEIGHTS_FILE}: gnnseg reads Hugging Face "
                                  "weights from safetensors only (a .bin file is a pickle, and unpickling can run "
                                  "code). Where the folder is trusted, convert it with transformers: "
                                  "SamModel.from_pretrained(folder).save_pretrained(new_folder)")
        raise CheckpointError(f"{folder} has no {WEIGHTS_FILE} (nor {WEIGHTS_INDEX_FILE})")
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ImportError("reading a Hugging Face folder needs safetensors: pip install 'gnnseg[hf]'") from None
    state: dict[str, Tensor] = {}
    for path in files:
        if not path.is_file():
            raise CheckpointError(f"{path} is missing ({index.name} lists it)")
        try:
            state.update(load_file(path, device="cpu"))
        except Exception as exc:  # safetensors raises its own error type, OSError or ValueError for foreign files
            raise CheckpointError(f"cannot read {path}: not a safetensors file, or a corrupt one "
                                  f"({type(exc).__name__}: {str(exc)[:200]})") from None
    return state


def load_hf_folder(folder: str | os.PathLike, *, normalization: Normalization | None = None,
                   preprocessing: Preprocessing | None = None) -> tuple[Sam, dict[str, Any]]:
    """A Hugging Face SAM folder (``config.json`` + ``model.safetensors``) as gnnseg's model, in eval mode, and
    metadata saying where its input normalisation came from.

    The config is checked before any tensor is read. ``normalization`` and ``preprocessing`` override what the
    folder implies (``minmax`` for MedSAM's weights, whose HF ports carry SAM's processor settings).
    """
    folder = Path(folder)
    if not is_hugging_face_folder(folder):
        raise CheckpointError(f"{folder} is not a Hugging Face model folder ({CONFIG_FILE} naming its model_type, "
                              f"and {WEIGHTS_FILE}); a gnnseg ONNX export folder is opened with OnnxSam")
    if not (folder / CONFIG_FILE).is_file():
        raise CheckpointError(f"{folder} has weights but no {CONFIG_FILE}, which says what model they are")
    config = _read_json(folder / CONFIG_FILE)
    try:
        model_config, source = _model_config(sam_config_from_hf(config), config, folder, normalization,
                                             preprocessing)
    except CheckpointError as exc:
        raise CheckpointError(f"{folder}: {exc}") from None
    state = read_safetensors_weights(folder)  # its errors name the file
    try:
        model = _loaded_model(model_config, state)
    except CheckpointError as exc:
        raise CheckpointError(f"{folder}: {exc}") from None
    return model, {"source_layout": "huggingface", "normalization_source": source}


def sam_from_transformers(model: Any, *, normalization: Normalization | None = None,
                          preprocessing: Preprocessing | None = None) -> Sam:
    """A ``transformers.SamModel`` in memory as gnnseg's model (eval mode), through its config and state dict.

    The normalisation is ``normalization``, else SamImageProcessor's (ImageNet) unless the model's config records
    gnnseg's own input chain (a model read from an export).
    """
    if type(model).__name__ != "SamModel" or not hasattr(model, "config"):
        raise CheckpointError(f"a {type(model).__name__} is not transformers' SamModel, the only Hugging Face SAM "
                              "gnnseg reads")
    config = model.config.to_dict()
    model_config, _ = _model_config(sam_config_from_hf(config), config, None, normalization, preprocessing)
    return _loaded_model(model_config, {key: value.detach().cpu() for key, value in model.state_dict().items()})


def _processor_settings(config: SamConfig) -> dict[str, Any] | None:
    """``preprocessor_config.json`` for a model that HF's SamImageProcessor feeds as gnnseg does (ImageNet
    normalisation, longest side resized and padded, the whole image); ``None`` for any other input chain."""
    if config.normalization != "imagenet" or config.layout != "padded" or config.crop_margin is not None:
        return None
    size, mask_size = config.image_size, config.image_size // 4
    return {"image_processor_type": "SamImageProcessor", "do_convert_rgb": True, "do_resize": True,
            "size": {"longest_edge": size}, "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255,
            "do_normalize": True, "image_mean": list(_IMAGENET_MEAN), "image_std": list(_IMAGENET_STD),
            "do_pad": True, "pad_size": {"height": size, "width": size}, "mask_size": {"longest_edge": mask_size},
            "mask_pad_size": {"height": mask_size, "width": mask_size}}


def refuse_nonempty_folder(folder: str | os.PathLike) -> Path:
    """``folder`` as a path, if it is new or an empty folder; anything else is refused, untouched."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder} exists and is not an empty folder; choose a new or empty one")
    return folder


def export_hf(model: Sam, folder: str | os.PathLike) -> Path:
    """Write ``model`` as a Hugging Face SAM folder that ``transformers.SamModel.from_pretrained(folder)`` loads with
    no missing or unexpected tensor: ``config.json`` (with gnnseg's input chain under ``gnnseg_input``),
    ``model.safetensors`` (float32) and, where HF's processor feeds the model as gnnseg does,
    ``preprocessor_config.json``.

    ``folder`` must be new or empty; it is written whole or not at all (a temporary folder beside it, renamed).
    """
    folder = refuse_nonempty_folder(folder)
    if not isinstance(model, Sam):
        raise CheckpointError(f"a {type(model).__name__} cannot be exported to Hugging Face: give a PyTorch "
                              "checkpoint (an ONNX export holds no PyTorch weights)")
    config = hf_config_from_sam(model.config)
    config[INPUT_CHAIN_KEY] = {name: getattr(model.config, name) for name in _INPUT_FIELDS}
    state = {key: value.detach().to("cpu", torch.float32).contiguous()
             for key, value in gnnseg_to_hf_keys(model.state_dict()).items()}
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise ImportError("writing a Hugging Face folder needs safetensors: pip install 'gnnseg[hf]'") from None
    with atomic_folder(folder) as temporary:       # an empty folder there (checked above) gives way
        (temporary / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        save_file(state, temporary / WEIGHTS_FILE, metadata={"format": "pt"})
        processor = _processor_settings(model.config)
        if processor is not None:
            (temporary / PREPROCESSOR_FILE).write_text(json.dumps(processor, indent=2) + "\n")
    return folder
