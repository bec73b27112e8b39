"""Training a planned U-Net on one cross-validation fold, with checkpoints that survive interruption.

Recipe (nnU-Net v2's ``nnUNetTrainer``): SGD with Nesterov momentum 0.99, lr 0.01, weight decay 3e-5 and
a poly schedule ``lr * (1 - epoch / epochs) ** 0.9`` (AdamW as an option); Dice + cross-entropy with deep
supervision; 33% foreground oversampling; augmentation (``augment.py``); an epoch is a fixed number of
iterations. ``precision="bfloat16"`` runs the forward passes under autocast (convolutions in bfloat16, the loss
in float32), as nnU-Net trains with mixed precision on GPUs. After each epoch: the pseudo Dice of validation
patches, its moving average (which picks ``checkpoint_best.pth``), ``checkpoint_latest.pth``, ``progress.png`` and
a line of the text log (:mod:`gnnseg.seg.unet.training_log`); at the end ``checkpoint_final.pth`` (nnU-Net v2's file
names; the files hold gnnseg's checkpoint format). ``resume=True`` continues from the latest checkpoint. At the end
every validation case is segmented with sliding windows in its original geometry and scored (Dice per class); its
labels and probabilities are kept in the run's ``validation/`` folder (:mod:`gnnseg.seg.unet.validation_predictions`),
where model selection reads them.

Launched with ``torchrun --nproc_per_node=N``, training is data parallel (DDP): every rank draws its own
patches (seeded by rank), gradients are averaged across ranks, validation counts are summed, and rank 0
alone writes checkpoints, plots and the summary.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from gnnseg.core import load_checkpoint, progress, save_checkpoint, seed_everything  # noqa: E402
from gnnseg.core.atomic import atomic_path  # noqa: E402
from gnnseg.core.devices import resolve_device  # noqa: E402
from gnnseg.core.distributed import distributed_context  # noqa: E402
from gnnseg.core.runs import write_json  # noqa: E402
from gnnseg.seg.io import RawDataset  # noqa: E402
from gnnseg.seg.metrics import dice  # noqa: E402
from gnnseg.seg.unet.augment import AugmentationConfig, augment  # noqa: E402
from gnnseg.seg.unet.dataloader import PatchSampler  # noqa: E402
from gnnseg.seg.unet.inference_network import prediction_network  # noqa: E402
from gnnseg.seg.unet.label_targets import pseudo_dice_counts  # noqa: E402
from gnnseg.seg.unet.loss import training_loss  # noqa: E402
from gnnseg.seg.unet.network import NETWORKS, UNet, mamba_stages_for  # noqa: E402
from gnnseg.seg.unet.nnunet_networks import NnUNetNetwork, initialize_for_training  # noqa: E402
from gnnseg.seg.unet.nnunet_networks import build_network as build_nnunet_network  # noqa: E402
from gnnseg.seg.unet.plans import Plans  # noqa: E402
from gnnseg.seg.unet.postprocess import region_mask  # noqa: E402
from gnnseg.seg.unet.precision import PRECISIONS, autocast  # noqa: E402
from gnnseg.seg.unet.predict import predict_case  # noqa: E402
from gnnseg.seg.unet.splits import fold_cases, load_or_create_splits  # noqa: E402
from gnnseg.seg.unet.training_log import TrainingLog  # noqa: E402
from gnnseg.seg.unet.validation_predictions import ValidationPredictionWriter  # noqa: E402

CHECKPOINT_FORMAT = "gnnseg.unet/1"
CHECKPOINT_FINAL = "checkpoint_final.pth"
"""The network at the end of training (written once the last epoch is done): what prediction uses by default."""
CHECKPOINT_BEST = "checkpoint_best.pth"
"""The network at the epoch with the best moving average of the validation patches' pseudo Dice."""
CHECKPOINT_LATEST = "checkpoint_latest.pth"
"""The network, optimizer and log after the latest epoch: what resuming continues from."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1000
    iterations_per_epoch: int = 250
    validation_iterations: int = 50
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float | None = None                # None: 0.01 for SGD (nnU-Net), 1e-3 for AdamW
    weight_decay: float | None = None      # None: 3e-5 for SGD (nnU-Net), 1e-2 for AdamW
    momentum: float = 0.99
    poly_exponent: float = 0.9
    oversample_foreground: float = 0.33
    deep_supervision: bool = True
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    batch_size: int | None = None          # None: the plans' batch size
    network: str = "unet"                  # or umamba_bot / umamba_enc (U-Mamba, gnnseg.seg.unet.mamba)
    precision: Literal["float32", "bfloat16"] = "float32"   # bfloat16: autocast (fast on AVX512-BF16 CPUs)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        defaults = {"sgd": (0.01, 3e-5), "adamw": (1e-3, 1e-2)}[self.optimizer]
        if self.lr is None:
            object.__setattr__(self, "lr", defaults[0])
        if self.weight_decay is None:
            object.__setattr__(self, "weight_decay", defaults[1])
        for name in ("epochs", "iterations_per_epoch", "validation_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.network not in NETWORKS:
            raise ValueError(f"network must be one of {list(NETWORKS)}, got {self.network!r}")


def build_network(plans: Plans, configuration: str, deep_supervision: bool = True,
                  network: str = "unet") -> UNet | NnUNetNetwork:
    """The configuration's network from the plans: the U-Net, or a U-Mamba variant of it (``network``); a ResEnc
    preset's plans (an ``architecture`` entry) give nnU-Net's ResidualEncoderUNet (:mod:`.nnunet_networks`)."""
    plan = plans.configuration(configuration)
    if plan.architecture is not None:
        if network != "unet":
            raise ValueError(f"--network {network} is a variant of gnnseg's plain U-Net; the plans' configuration "
                             f"{configuration!r} is a {plan.architecture['network_class_name']} (a ResEnc preset): "
                             "train it with --network unet, or plan with --planner default")
        built = build_nnunet_network(plan.architecture, len(plans.channel_names), plans.label_model.num_outputs,
                                     where=f"plans configuration {configuration!r}")
        initialize_for_training(built)
        built.deep_supervision = deep_supervision
        return built
    topology = plan.network
    return UNet(len(plans.channel_names), plans.label_model.num_outputs, dims=topology.dims,
                features_per_stage=topology.features_per_stage, kernel_sizes=topology.kernel_sizes,
                strides=topology.strides, convs_per_stage=topology.convs_per_stage, deep_supervision=deep_supervision,
                mamba_stages=mamba_stages_for(network, topology.num_stages))


def as_float32(outputs: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """Logits (one tensor or the deep supervision list) in float32, where the loss is computed."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float()
    return [output.float() for output in outputs]


def poly_lr(initial: float, epoch: int, epochs: int, exponent: float = 0.9) -> float:
    return initial * (1 - epoch / epochs) ** exponent


def _optimizer(network: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(network.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True,
                               weight_decay=config.weight_decay)
    return torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _plot_progress(log: dict[str, list[float]], path: Path) -> None:
    figure, loss_axis = plt.subplots(figsize=(8, 4))
    epochs = range(1, len(log["train_loss"]) + 1)
    loss_axis.plot(epochs, log["train_loss"], label="train loss")
    loss_axis.plot(epochs, log["val_loss"], label="validation loss")
    loss_axis.set(xlabel="epoch", ylabel="loss")
    dice_axis = loss_axis.twinx()
    dice_axis.plot(epochs, log["pseudo_dice"], "g.", label="pseudo Dice")
    dice_axis.plot(epochs, log["pseudo_dice_ema"], "g-", label="pseudo Dice (EMA)")
    dice_axis.set(ylabel="Dice", ylim=(0, 1))
    lines = loss_axis.get_legend_handles_labels()[0] + dice_axis.get_legend_handles_labels()[0]
    loss_axis.legend(lines, [line.get_label() for line in lines], loc="center right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


TRAIN_CONFIG = "train_config.json"
"""The file in a run folder that records its ``TrainConfig`` (and the fold's cases)."""


def _trained_settings(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """A run's ``train_config.json`` as stored (``None`` for a folder without one)."""
    saved = Path(run_dir) / TRAIN_CONFIG
    return json.loads(saved.read_text()) if saved.is_file() else None


def trained_augmentation(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The augmentation settings a run was trained with, as its ``train_config.json`` holds them (``None`` for a
    folder without one)."""
    stored = _trained_settings(run_dir)
    return None if stored is None else stored.get("augmentation")


def _as_json(settings: AugmentationConfig | TrainConfig) -> dict[str, Any]:
    """The settings as ``train_config.json`` stores them (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(settings)))


# a resumed run may train for more epochs and validate on more batches; any other change makes it another run
_MAY_CHANGE_ON_RESUME = frozenset({"epochs", "validation_iterations"})


def _check_same_training(run_dir: Path, config: TrainConfig) -> None:
    """Refuse to resume a run with settings other than those it was trained with (a resumed run that silently turned
    mirroring back on, or switched to bfloat16 or another optimizer, would be a different experiment).

    A setting missing from the run's file was added to gnnseg after the run was trained; the run trained without it,
    which is what its default means (every setting is added with a default that keeps the earlier behaviour)."""
    stored = _trained_settings(run_dir)
    if stored is None:
        return
    defaults = _as_json(TrainConfig(optimizer=config.optimizer))      # the learning rate's default follows it
    saved = {**defaults, **stored, "augmentation": {**defaults["augmentation"], **stored.get("augmentation", {})}}
    given = _as_json(config)
    changed = [f"{key} {saved['augmentation'][key]!r} -> {value!r}" for key, value in given["augmentation"].items()
               if saved["augmentation"][key] != value]
    changed += [f"{key} {saved[key]!r} -> {value!r}" for key, value in given.items()
                if key not in _MAY_CHANGE_ON_RESUME | {"augmentation"} and saved[key] != value]
    if changed:
        raise ValueError(f"cannot resume {run_dir} with other training settings ({', '.join(sorted(changed))}); "
                         f"pass the run's own options again")


def train_fold(preprocessed: str | os.PathLike, plans: Plans, configuration: str, fold: int | str,
               output: str | os.PathLike, config: TrainConfig = TrainConfig(), *, raw_dataset: RawDataset | None = None,
               resume: bool = False, show_progress: bool | None = None,
               device: str | torch.device | None = None) -> dict[str, Any]:
    """Train ``configuration`` on ``fold`` (0..4, or "all": train on every case and validate on them too)
    from ``preprocessed/<configuration>``; write into ``output``. ``device`` defaults to this process's GPU where
    there is one (patches are drawn and augmented on the CPU, then moved), else the CPU.

    ``raw_dataset`` enables the final full-image validation in original geometry.
    """
    output = Path(output)
    latest = output / CHECKPOINT_LATEST
    if resume and not latest.is_file():
        raise FileNotFoundError(f"cannot resume: {latest} does not exist (is {output} a training run?)")
    output.mkdir(parents=True, exist_ok=True)
    folder = Path(preprocessed) / configuration
    case_ids = sorted(p.stem for p in folder.glob("*.json"))
    if not case_ids:
        raise FileNotFoundError(f"no preprocessed cases in {folder}; run `gnnseg seg preprocess` first")
    if fold == "all":
        train_ids = val_ids = case_ids
    else:
        train_ids, val_ids = fold_cases(load_or_create_splits(Path(preprocessed) / "splits_final.json", case_ids), fold)
    plan = plans.configuration(configuration)
    labels = plans.label_model          # plain labels or regions, and the ignore label
    batch_size = plan.batch_size if config.batch_size is None else config.batch_size

    context = distributed_context()
    generator = seed_everything(config.seed)            # same initial weights on every rank
    device = resolve_device(device, context.local_rank)
    network = build_network(plans, configuration, config.deep_supervision, config.network).to(device)
    optimizer = _optimizer(network, config)
    loss_fn = training_loss(labels, batch_dice=True)
    log: dict[str, list[float]] = {k: [] for k in ("train_loss", "val_loss", "pseudo_dice", "pseudo_dice_ema",
                                                  "lr", "epoch_seconds")}
    start_epoch, best_ema = 0, -1.0
    if resume:
        _check_same_training(output, config)
        state = load_checkpoint(latest, required_keys=("network", "optimizer", "epoch", "log", "format", "best_ema"))
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        if (state.get("configuration"), str(state.get("fold", fold))) != (configuration, str(fold)):
            raise ValueError(f"{latest} belongs to configuration {state.get('configuration')!r} fold "
                             f"{state.get('fold')!r}, not {configuration!r} fold {fold!r}")
        start_epoch, log, best_ema = state["epoch"], state["log"], state["best_ema"]
    generator.manual_seed(config.seed + 1000 * context.rank + start_epoch)
    model = network
    if context.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None)

    text_log = TrainingLog(output)
    if context.is_main:
        text_log.write(f"training configuration {configuration} fold {fold}: epochs {start_epoch + 1} to "
                       f"{config.epochs}, {config.iterations_per_epoch} iterations each, network {config.network}, "
                       f"optimizer {config.optimizer}, precision {config.precision}"
                       + (f", resumed from {latest.name}" if resume else ""))
        plans.save(output / "plans.json")
        write_json(output / TRAIN_CONFIG, {**dataclasses.asdict(config), "configuration": configuration,
                                           "fold": fold, "train_cases": train_ids, "val_cases": val_ids,
                                           "world_size": context.world_size})
    train_sampler = PatchSampler(folder, train_ids, plan.patch_size, batch_size,
                                 oversample_foreground=config.oversample_foreground,
                                 seed=config.seed + 1000 * context.rank + start_epoch)
    val_sampler = PatchSampler(folder, val_ids, plan.patch_size, batch_size,
                               oversample_foreground=config.oversample_foreground,
                               seed=10_000 + config.seed + 1000 * context.rank)
    plans_document = plans.to_json()      # checkpoints hold plain data (loaded with weights_only=True)

    bar = progress(range(start_epoch, config.epochs), desc=f"train {configuration} fold {fold}",
                   total=config.epochs - start_epoch, enabled=show_progress if context.is_main else False)
    for epoch in bar:
        began = time.perf_counter()
        lr = poly_lr(config.lr, epoch, config.epochs, config.poly_exponent)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        network.deep_supervision = config.deep_supervision
        losses = []
        for _ in range(config.iterations_per_epoch):
            image, target = train_sampler.batch()
            image, target = augment(image, target, config.augmentation, generator)
            image, target = image.to(device), target.to(device)
            optimizer.zero_grad(set_to_none=True)
            with autocast(config.precision, device.type):
                outputs = model(image)
            loss = loss_fn(as_float32(outputs), target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 12.0)
            optimizer.step()
            losses.append(loss.item())

        model.eval()
        network.deep_supervision = False
        val_losses, counts = [], np.zeros((3, len(labels.scored)))
        with torch.no_grad():
            for _ in range(config.validation_iterations):
                image, target = (tensor.to(device) for tensor in val_sampler.batch())
                with autocast(config.precision, device.type):
                    logits = network(image).float()
                val_losses.append(loss_fn.loss(logits, target).item())
                counts += pseudo_dice_counts(logits, target, labels)
        counts = context.all_reduce_sum(torch.from_numpy(counts).to(device)).cpu().numpy()
        tp, fp, fn = counts
        per_class_dice = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
        pseudo_dice = float(np.mean(per_class_dice))
        ema = pseudo_dice if not log["pseudo_dice_ema"] else 0.9 * log["pseudo_dice_ema"][-1] + 0.1 * pseudo_dice
        for key, value in (("train_loss", np.mean(losses)), ("val_loss", np.mean(val_losses)),
                           ("pseudo_dice", pseudo_dice), ("pseudo_dice_ema", ema), ("lr", lr),
                           ("epoch_seconds", time.perf_counter() - began)):
            log[key].append(float(value))
        state = {"format": CHECKPOINT_FORMAT, "network": network.state_dict(), "optimizer": optimizer.state_dict(),
                 "epoch": epoch + 1, "log": log, "best_ema": max(best_ema, ema), "configuration": configuration,
                 "plans": plans_document, "deep_supervision": config.deep_supervision, "fold": fold,
                 "network_kind": config.network}
        if not context.is_main:
            best_ema = max(best_ema, ema)
            continue
        improved = ema > best_ema
        if improved:
            best_ema = ema
            save_checkpoint(state, output / CHECKPOINT_BEST)
        save_checkpoint(state, latest)
        _plot_progress(log, output / "progress.png")
        text_log.epoch(epoch + 1, config.epochs, train_loss=log["train_loss"][-1], val_loss=log["val_loss"][-1],
                       pseudo_dice=per_class_dice.tolist(), ema=ema, new_best=improved, lr=lr,
                       seconds=log["epoch_seconds"][-1])

    if context.is_main:
        with atomic_path(output / CHECKPOINT_FINAL) as temporary:     # the last epoch's network, whole or not at all
            shutil.copyfile(latest, temporary)

    summary: dict[str, Any] = {"configuration": configuration, "fold": fold, "epochs": config.epochs,
                               "final_pseudo_dice": log["pseudo_dice"][-1] if log["pseudo_dice"] else None,
                               "best_pseudo_dice_ema": best_ema,
                               "train_seconds": float(np.sum(log["epoch_seconds"]))}
    if raw_dataset is not None and context.is_main:
        # as nnU-Net validates, and as `seg predict` predicts by default: mirrored along the axes trained on
        dims = len(plan.patch_size)
        axes = tuple(range(dims)) if config.augmentation.mirror_axes is None else tuple(config.augmentation.mirror_axes)
        summary["validation"] = validate_cases(network, raw_dataset, val_ids, plans, configuration, save_to=output,
                                               mirror_axes=axes)
    if context.is_main:
        write_json(output / "summary.json", summary)
    return summary


def validate_cases(network: UNet, dataset: RawDataset, case_ids, plans: Plans, configuration: str,
                   save_to: str | os.PathLike | None = None, **options: Any) -> dict[str, Any]:
    """Segment each case in its original geometry and report Dice per foreground label or region (outside the
    ignore label) and their mean; with ``save_to`` (a run folder) the predictions are kept in its ``validation/``
    folder for model selection."""
    network.deep_supervision = False
    network = prediction_network(network, "float32", next(network.parameters()).device)   # as seg predict runs it
    per_case = {}
    model = plans.label_model
    labels = {name: member for name, member in model.names.items() if member != 0}
    writer = ValidationPredictionWriter(save_to, dataset.file_ending) if save_to is not None else nullcontext()
    with writer:
        for case_id in case_ids:
            case = dataset.load_case(case_id)
            predicted, probabilities = predict_case(network, case.stacked(), case.spacing, plans, configuration,
                                                    **options)
            if save_to is not None:
                writer.save(case_id, predicted, probabilities, case.label)
            counted = np.ones(predicted.shape, bool) if model.ignore_label is None else \
                case.label.array != model.ignore_label
            per_case[case_id] = {name: dice(region_mask(predicted, member) & counted,
                                            region_mask(case.label.array, member) & counted)
                                 for name, member in labels.items()}
    mean = {name: float(np.mean([scores[name] for scores in per_case.values()])) for name in labels}
    return {"per_case": per_case, "mean_dice": mean}


def load_trained_network(checkpoint: str | os.PathLike) -> tuple[UNet, Plans, str]:
    """``(network, plans, configuration)`` from a training checkpoint, ready for inference."""
    state = load_checkpoint(checkpoint, required_keys=("format", "network", "plans", "configuration"))
    if state["format"] != CHECKPOINT_FORMAT:
        raise ValueError(f"{checkpoint} is a {state['format']!r} checkpoint, not a gnnseg U-Net")
    plans = Plans.from_json(state["plans"], source=f"the plans in {checkpoint}")
    network = build_network(plans, state["configuration"], state.get("deep_supervision", True),
                            state.get("network_kind", "unet"))
    network.load_state_dict(state["network"])
    network.deep_supervision = False
    network.eval()
    return network, plans, state["configuration"]
