"""The ``gnnseg`` command: parses arguments and calls library functions; no logic lives here.

Importing this module and building the parser import no torch: each command imports what it runs, so
``gnnseg seg segment`` with an ONNX export starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from importlib import import_module

from gnnseg.core.jsonable import jsonable
from gnnseg.seg.sam.modeling.config import NORMALIZATIONS, PREPROCESSINGS

SAMPLERS = ("neighbor", "fastgcn", "ladies")
DEVICE_HELP = "cpu, cuda or cuda:N (default: the GPU where there is one, else the CPU)"
TTA_HELP = ("test-time augmentation: none (default), flip (the image and its mirror, 2 passes) or d4 (4 quarter "
            "turns, each also mirrored, 8 passes); probabilities are averaged")
ZOOM_HELP = ("answer each box on a window CONTEXT box sizes wider on each side, at least the model's input size and "
             "inside the image, instead of the whole image (whole-image models; one encoder pass per box; 0.5 is "
             "what the benchmarks measure)")
ZOOM_SCALES_HELP = ("with --zoom: N windows per box, each half as wide as the one before (and enlarged up to twice "
                    "as much), probabilities averaged; N encoder passes per box (default 1; 2 is what the benchmarks "
                    "measure)")


CHECKPOINT_HELP = ("a model name ({names}{default}), a checkpoint (SAM, MedSAM, MobileSAM, Lite MedSAM or gnnseg "
                   "layout) or an ONNX export folder")
NORMALIZATION_HELP = ("input normalisation, overriding what the checkpoint implies: minmax (MedSAM, Lite MedSAM) or "
                      "imagenet (SAM, MobileSAM); needed for a flat ViT checkpoint, whose tensors do not tell")
UNMATCHED_HELP = ("go on when an image has no mask of the same name (by default that is an error listing every "
                  "such image); names are matched whole, without their extension")
PREPROCESSING_HELP = ("Lite MedSAM-style models: gnnseg (area averaging in floating point, fractional boxes) or "
                      "official (the released LiteMedSAM code's OpenCV resize and truncated boxes, reproducing its "
                      "masks; needs opencv-python-headless); default: the model's own")


def _checkpoint_help(*, with_default: bool = True) -> str:
    """--checkpoint's help with the model names, read from the torch-free registry without loading a model."""
    from gnnseg.seg.sam.shipped import DEFAULT_MODEL, MODEL_NAMES

    return CHECKPOINT_HELP.format(names=", ".join(MODEL_NAMES), default=f"; default {DEFAULT_MODEL}" * with_default)


def _add_model_arguments(parser: argparse.ArgumentParser, tta_help: str | None = TTA_HELP, *,
                         checkpoint_required: bool = False) -> None:
    """--checkpoint, --normalization, --preprocessing and (unless ``tta_help`` is None) --tta, --zoom and
    --zoom-scales: which box-prompted model answers and how (:func:`_model_choice`)."""
    parser.add_argument("--checkpoint", required=checkpoint_required,
                        help=_checkpoint_help(with_default=not checkpoint_required))
    parser.add_argument("--normalization", choices=NORMALIZATIONS, help=NORMALIZATION_HELP)
    parser.add_argument("--preprocessing", choices=PREPROCESSINGS, help=PREPROCESSING_HELP)
    if tta_help is None:
        return
    parser.add_argument("--tta", default="none", help=tta_help)
    parser.add_argument("--zoom", type=float, default=None, metavar="CONTEXT", help=ZOOM_HELP)
    parser.add_argument("--zoom-scales", type=int, default=1, metavar="N", help=ZOOM_SCALES_HELP)


def _model_choice(args: argparse.Namespace):
    """The :class:`~gnnseg.seg.sam.shipped.ModelChoice` given on the command line (checked now, before any work)."""
    from gnnseg.seg.sam.shipped import ModelChoice

    test_time = ({"augmentation": args.tta, "zoom": args.zoom, "zoom_scales": args.zoom_scales}
                 if hasattr(args, "tta") else {})
    return ModelChoice(checkpoint=args.checkpoint, normalization=args.normalization,
                       preprocessing=args.preprocessing, **test_time)


class _Names(Sequence):
    """Choices named by a module attribute, read when argparse first looks at them (to check a value given for
    that option, or to list them in an error), so that building the parser imports none of those modules. Options
    with such choices carry a ``metavar``: argparse would otherwise read the choices to format it."""

    def __init__(self, module: str, attribute: str, *extra: str) -> None:
        self.module, self.attribute, self.extra = module, attribute, extra

    def _names(self) -> tuple[str, ...]:
        return (*getattr(import_module(self.module), self.attribute), *self.extra)

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())


NODE_DATASETS = _Names("gnnseg.gnn.datasets", "NODE_DATASETS")


def _print(result: dict, as_json: bool) -> None:
    if as_json:   # the last stdout line is the machine-readable result (NaN / inf become null)
        print(json.dumps(jsonable(result), sort_keys=True, allow_nan=False))
        return
    for key, value in result.items():
        print(f"{key:>22s}: {value:.4f}" if isinstance(value, float) else f"{key:>22s}: {value}")


def _gnn_train(args: argparse.Namespace) -> dict:
    overrides = {key: value for key, value in (("epochs", args.epochs), ("lr", args.lr),
                                               ("hidden", args.hidden)) if value is not None}
    minibatch = {key: value for key, value in (("fanouts", args.fanouts), ("num_samples", args.num_samples),
                                               ("batch_size", args.batch_size), ("num_workers", args.num_workers),
                                               ("patience", args.patience), ("eval_every", args.eval_every),
                                               ("reuse_samples", args.reuse_samples))
                 if value is not None}
    if args.model == "sage" or args.sampler is not None:     # mini-batch training on sampled blocks
        from gnnseg.gnn.tasks.minibatch_runs import run_minibatch_classification

        return run_minibatch_classification(args.model, args.sampler, args.dataset, args.root, seeds=args.seeds,
                                            first_seed=args.seed, runs_root=args.runs_dir,
                                            overrides={**overrides, **minibatch}, resume_run=args.resume,
                                            show_progress=False if args.json else None)
    if minibatch or args.resume:
        given = ", ".join(f"--{key.replace('_', '-')}" for key in minibatch) or "--resume"
        raise ValueError(f"{given} apply to mini-batch training: add --sampler neighbor|fastgcn|ladies "
                         f"(or --model sage)")
    from gnnseg.gnn.tasks.node_runs import run_node_classification

    return run_node_classification(args.model or "gcn", args.dataset, args.root, seeds=args.seeds,
                                   first_seed=args.seed, runs_root=args.runs_dir, overrides=overrides,
                                   show_progress=False if args.json else None)


def _gnn_synth(args: argparse.Namespace) -> dict:
    from gnnseg.gnn.datasets.synthetic import SyntheticConfig, write_synthetic

    config = SyntheticConfig(num_nodes=args.nodes, avg_degree=args.avg_degree, num_classes=args.classes,
                             num_features=args.features, degree_exponent=args.degree_exponent,
                             homophily=args.homophily, feature_noise=args.feature_noise,
                             label_noise=args.label_noise, train_fraction=args.train_fraction,
                             val_fraction=args.val_fraction, seed=args.seed)
    return write_synthetic(config, args.out)


def _gnn_linkpred(args: argparse.Namespace) -> dict:
    from gnnseg.gnn.tasks.link_runs import run_link_prediction

    return run_link_prediction(args.dataset, args.root, seeds=args.seeds, first_seed=args.seed,
                               variational=args.variational, objective=args.objective, epochs=args.epochs,
                               runs_root=args.runs_dir)


def _gnn_graphclass(args: argparse.Namespace) -> dict:
    from gnnseg.gnn.datasets.tu import load_tu
    from gnnseg.gnn.tasks.graph_classification import GraphConfig, cross_validate

    config = GraphConfig(folds=args.folds, epochs=args.epochs, hidden=args.hidden, train_eps=args.train_eps,
                         readout=args.readout)
    result = cross_validate(load_tu(args.dataset, args.root), config, seed=args.seed,
                            show_progress=False if args.json else None)
    result.pop("curves")
    return {"dataset": args.dataset, "model": "gin-eps" if args.train_eps else "gin-0", **result}


def _gnn_molecules(args: argparse.Namespace) -> dict:
    from gnnseg.gnn.tasks.molecule_runs import run_molecule_property

    overrides = {key: value for key, value in (("epochs", args.epochs), ("hidden", args.hidden),
                                               ("num_layers", args.layers), ("batch_size", args.batch_size),
                                               ("lr", args.lr), ("patience", args.patience),
                                               ("dropout", args.dropout)) if value is not None}
    if args.no_bond_features:
        overrides["bond_features"] = False
    return run_molecule_property(args.csv, args.targets, smiles_column=args.smiles_column, task=args.task,
                                 split=args.split, seeds=args.seeds, first_seed=args.seed, runs_root=args.runs_dir,
                                 overrides=overrides, show_progress=False if args.json else None)


def _gnn_screen(args: argparse.Namespace) -> dict:
    from gnnseg.gnn.tasks.molecule_runs import screen_library

    return screen_library(args.model, args.csv, args.out, smiles_column=args.smiles_column, top=args.top,
                          target=args.target, ascending=args.ascending)


def _gnn_oversmooth(args: argparse.Namespace) -> dict:
    from gnnseg.gnn.tasks.depth_sweeps import run_oversmoothing

    return run_oversmoothing(args.dataset, args.root, model=args.model, depths=args.depths, remedies=args.remedies,
                             seeds=args.seeds, first_seed=args.seed, epochs=args.epochs, runs_root=args.runs_dir,
                             karate=not args.no_karate, show_progress=False if args.json else None)


def _gnn_eval(args: argparse.Namespace) -> dict:
    from gnnseg.gnn.tasks.saved_models import evaluate_saved_classifier

    return evaluate_saved_classifier(args.checkpoint, args.root, args.dataset)


def _seg_convert(args: argparse.Namespace) -> dict:
    from gnnseg.seg.io import CONVERTERS

    dataset = CONVERTERS[args.dataset](args.source, args.target)
    return {"dataset": str(dataset.root), "training_cases": len(dataset.case_ids()),
            "test_cases": len(dataset.case_ids("Ts"))}


def _seg_plan(args: argparse.Namespace) -> dict:
    from gnnseg.seg.unet.pipeline import plan_dataset

    return plan_dataset(args.dataset_dir, args.work_dir or f"{args.dataset_dir.rstrip('/')}_work",
                        memory_gb=args.memory_gb, device=args.device, base_features=args.base_features,
                        overwrite=args.overwrite)


def _seg_preprocess(args: argparse.Namespace) -> dict:
    from gnnseg.seg.unet.pipeline import preprocess

    return preprocess(args.work_dir, args.configuration)


def _seg_train(args: argparse.Namespace) -> dict:
    from gnnseg.seg.unet.augment import AugmentationConfig
    from gnnseg.seg.unet.pipeline import train
    from gnnseg.seg.unet.train import TrainConfig

    augmentation = AugmentationConfig(elastic_p=args.elastic, shift_p=args.intensity_shift,
                                      label_shift_p=args.label_intensity_shift,
                                      mirror_axes=() if args.no_mirroring else None)
    config = TrainConfig(epochs=args.epochs, iterations_per_epoch=args.iterations, optimizer=args.optimizer,
                         lr=args.lr, seed=args.seed, batch_size=args.batch_size, network=args.network,
                         precision=args.precision, augmentation=augmentation)
    fold = args.fold if args.fold == "all" else int(args.fold)
    return train(args.work_dir, args.configuration, fold, config, runs_root=args.runs_dir, resume_run=args.resume,
                 show_progress=False if args.json else None, device=args.device)


def _seg_predict(args: argparse.Namespace) -> dict:
    from gnnseg.seg.unet.pipeline import predict_folder

    return predict_folder(args.model, args.input, args.output, checkpoint=args.checkpoint, mirror=args.mirror,
                          keep_largest=args.keep_largest, device=args.device)


def _seg_metrics(args: argparse.Namespace) -> dict:
    from gnnseg.seg.unet.pipeline import metrics_folder

    return metrics_folder(args.pred, args.gt, tolerance_mm=args.tolerance)


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a probability must be a number in [0, 1], got {text!r}")
    return value


def _numbers(text: str, count: int, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be {count} comma-separated numbers, got {text!r}") from None
    if len(values) != count:
        raise argparse.ArgumentTypeError(f"{what} must be {count} comma-separated numbers, got {text!r}")
    return values


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 25,10, got {text!r}") from None


def _dataset(text: str) -> str:
    from gnnseg.gnn.datasets import check_node_dataset

    try:
        return check_node_dataset(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _depths(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"depths must be comma-separated layer counts, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [] if text.strip().lower() in ("", "none") else [v.strip() for v in text.split(",")]


def _box(text: str) -> list[float]:
    return _numbers(text, 4, "a box (x0,y0,x1,y1)")


def _box3d(text: str) -> list[float]:
    return _numbers(text, 6, "a 3D box (x_min,y_min,z_min,x_max,y_max,z_max)")


def _seg_segment(args: argparse.Namespace) -> dict:
    import numpy as np

    from gnnseg.seg.sam.segment_files import (
        segment_challenge_file,
        segment_image,
        segment_volume_file,
    )

    if sum(map(bool, (args.image, args.volume, args.npz))) != 1:
        raise ValueError("give exactly one of --image (with --box), --volume (with --box3d) or --npz")
    if args.npz:
        return segment_challenge_file(args.npz, args.output, choice=_model_choice(args))
    if args.image:
        if not args.box:
            raise ValueError("--image needs at least one --box x0,y0,x1,y1")
        return segment_image(args.image, np.array(args.box), args.output, choice=_model_choice(args))
    if not args.box3d:
        raise ValueError("--volume needs at least one --box3d x_min,y_min,z_min,x_max,y_max,z_max")
    return segment_volume_file(args.volume, np.array(args.box3d), args.output, modality=args.modality,
                               window=args.window, choice=_model_choice(args))


def _seg_finetune(args: argparse.Namespace) -> dict:
    from gnnseg.seg.sam.folder_commands import finetune_folders
    from gnnseg.seg.sam.training.finetune import FinetuneConfig

    config = FinetuneConfig(rounds=args.rounds, iterations_per_round=args.iterations, batch_size=args.batch_size,
                            lr=args.lr, box_shift=args.box_shift, seed=args.seed)
    return finetune_folders(args.images, args.masks, args.output, val_images=args.val_images,
                            val_masks=args.val_masks, checkpoint=args.checkpoint, model=args.model,
                            normalization=args.normalization,
                            modality=args.modality, config=config, resume=args.resume,
                            allow_unmatched=args.allow_unmatched)


def _seg_distill(args: argparse.Namespace) -> dict:
    from gnnseg.seg.sam.folder_commands import distill_folders
    from gnnseg.seg.sam.training.distill import DistillConfig
    from gnnseg.seg.sam.training.finetune import FinetuneConfig

    distill = DistillConfig(iterations=args.distill_iterations, batch_size=args.batch_size, seed=args.seed)
    stage2 = FinetuneConfig(rounds=args.rounds, iterations_per_round=args.iterations, batch_size=args.batch_size,
                            lr=args.lr, box_shift=5, freeze_prompt_encoder=False, seed=args.seed)
    return distill_folders(args.images, args.masks, args.output, teacher=args.teacher, student=args.student,
                           teacher_normalization=args.normalization, modality=args.modality, distill=distill,
                           config=stage2, allow_unmatched=args.allow_unmatched)


def _seg_export_onnx(args: argparse.Namespace) -> dict:
    from gnnseg.seg.sam.folder_commands import export_onnx_folder

    return export_onnx_folder(args.output, choice=_model_choice(args))


def _seg_evaluate(args: argparse.Namespace) -> dict:
    from gnnseg.seg.sam.folder_commands import evaluate_folders

    result = evaluate_folders(args.images, args.masks, choice=_model_choice(args), box_margin=args.box_margin,
                              tolerance=args.tolerance, modality=args.modality,
                              allow_unmatched=args.allow_unmatched)
    if not args.json:
        result.pop("per_object")
    return result


def _lite_predict(args: argparse.Namespace) -> dict:
    from gnnseg.seg.sam.challenge import predict_cases

    result = predict_cases(args.input, args.output, choice=_model_choice(args),
                           show_progress=False if args.json else None, resume=args.resume)
    if not args.json:
        result.pop("seconds")
    return result


def _lite_evaluate(args: argparse.Namespace) -> dict:
    from gnnseg.seg.sam.challenge import evaluate_cases

    result = evaluate_cases(args.pred, args.gt)
    if not args.json:
        result.pop("per_case")
    return result


def _lite_convert(args: argparse.Namespace) -> dict:
    from gnnseg.seg.sam.challenge import write_cases

    return write_cases(args.data, args.output)


def _serve(args: argparse.Namespace) -> dict:
    try:
        from gnnseg.seg.serve.app import ModelOptions, ServiceLimits, create_app
        from gnnseg.seg.serve.server import access_for, listening_socket, serve
    except ImportError as exc:
        raise ImportError(f"the service needs its extra: pip install 'gnnseg[serve]' ({exc})") from None
    sock = listening_socket(args.host, args.port)  # a port in use fails here, before the model loads
    limits = ServiceLimits(max_upload_bytes=args.max_upload_mb * 2**20, max_boxes=args.max_boxes,
                           max_pixels=int(args.max_megapixels * 1e6), max_voxels=int(args.max_megavoxels * 1e6),
                           store_bytes=args.store_mb * 2**20, embedding_cache_bytes=args.cache_mb * 2**20)
    options = ModelOptions(decoder_dtype=args.decoder_dtype, compile_decoder=args.compile)
    access = access_for(args.host, args.token or os.environ.get("GNNSEG_SERVE_TOKEN"), args.allowed_host)
    serve(create_app(choice=_model_choice(args), limits=limits, options=options, access=access), sock, access)
    return {"stopped": True}


def _demo(args: argparse.Namespace) -> dict:
    from gnnseg.demo import run_demo

    return run_demo(args.runs_dir, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gnnseg", description="Graph neural networks and biomedical "
                                                                 "image segmentation.")
    halves = parser.add_subparsers(dest="command", required=True)

    gnn = halves.add_parser("gnn", help="graph neural networks").add_subparsers(dest="gnn_command", required=True)
    train = gnn.add_parser("train", help="node classification over several seeds: full-batch, or on sampled "
                                         "mini-batches with --sampler (or --model sage)")
    train.add_argument("--model", choices=_Names("gnnseg.gnn.tasks.node", "MODELS", "sage"), default=None,
                       metavar="MODEL",
                       help="gcn (default), sgc, gin, gat full-batch; sage trains on sampled mini-batches, and "
                            "with --sampler gcn/gat/gin do too (fastgcn/ladies: gcn by default)")
    train.add_argument("--dataset", type=_dataset, default="cora",
                       help="cora, citeseer, pubmed, karate, synth:PATH (gnnseg gnn synth) or ogb:PATH (an OGB "
                            "node-property folder such as dataset/ogbn_products)")
    train.add_argument("--root", help="folder holding the raw Planetoid files (ind.<name>.*)")
    train.add_argument("--sampler", choices=SAMPLERS, help="mini-batch training with uniform neighbour "
                                                           "(GraphSAGE), FastGCN or LADIES sampling")
    train.add_argument("--fanouts", type=_int_list, help="neighbours per hop from the seeds (default 25,10)")
    train.add_argument("--reuse-samples", action="store_const", const=True,
                       help="neighbour sampling: draw each node's neighbours once and share them with every layer "
                            "(PyG's NeighborLoader) instead of afresh per layer (GraphSAGE)")
    train.add_argument("--num-samples", type=_int_list,
                       help="fastgcn/ladies: nodes sampled per layer (defaults: fastgcn 400,400; ladies 64 x 5)")
    train.add_argument("--batch-size", type=int, help="seed nodes per mini-batch (default 512)")
    train.add_argument("--num-workers", type=int, help="DataLoader processes that sample ahead (default 0: "
                                                       "sample in the training process)")
    train.add_argument("--patience", type=int, help="mini-batch: epochs without a better validation accuracy "
                                                    "before stopping")
    train.add_argument("--eval-every", type=int, help="mini-batch: evaluate (exactly, over whole neighbourhoods) "
                                                      "every N epochs and after the last (default 1)")
    train.add_argument("--resume", metavar="RUN_DIR", help="mini-batch: continue the run in RUN_DIR from its "
                                                          "checkpoints (same arguments)")
    train.add_argument("--seeds", type=int, default=1, help="number of seeds to train (default 1)")
    train.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    train.add_argument("--epochs", type=int, help="override the preset's maximum epochs")
    train.add_argument("--lr", type=float, help="override the preset's learning rate")
    train.add_argument("--hidden", type=int, help="override the preset's hidden width")
    train.add_argument("--runs-dir", default="runs", help="where run directories are created (default runs/)")
    train.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    train.set_defaults(handler=_gnn_train)

    synth = gnn.add_parser("synth", help="write a large synthetic node-classification graph (degree-corrected "
                                         "SBM with power-law degrees) to a folder of .npy files")
    synth.add_argument("--nodes", type=int, required=True)
    synth.add_argument("--avg-degree", type=float, default=50.0, help="mean neighbours per node (default 50)")
    synth.add_argument("--classes", type=int, default=47, help="communities = classes (default 47)")
    synth.add_argument("--features", type=int, default=100, help="feature dimensions (default 100)")
    synth.add_argument("--degree-exponent", type=float, default=2.5, help="power-law tail P(k) ~ k^-g (default 2.5)")
    synth.add_argument("--homophily", type=float, default=0.5, help="share of a node's edges inside its community")
    synth.add_argument("--feature-noise", type=float, default=4.0, help="noise std around the class means")
    synth.add_argument("--label-noise", type=float, default=0.1, help="share of labels flipped to another class")
    synth.add_argument("--train-fraction", type=float, default=0.08)
    synth.add_argument("--val-fraction", type=float, default=0.02)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", required=True, help="new folder to write (never overwritten)")
    synth.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    synth.set_defaults(handler=_gnn_synth)

    link = gnn.add_parser("linkpred", help="link prediction with a graph auto-encoder (GAE / VGAE)")
    link.add_argument("--dataset", choices=NODE_DATASETS, default="cora", metavar="DATASET",
                      help="cora, citeseer, pubmed or karate")
    link.add_argument("--root", help="folder holding the raw Planetoid files (ind.<name>.*)")
    link.add_argument("--seeds", type=int, default=1)
    link.add_argument("--seed", type=int, default=0, help="first seed")
    link.add_argument("--variational", action="store_true", help="VGAE instead of GAE")
    link.add_argument("--objective", choices=("full", "sampled"), default="full",
                      help="full: all node pairs (GAE paper); sampled: one sampled non-edge per edge")
    link.add_argument("--epochs", type=int, default=200)
    link.add_argument("--runs-dir", default="runs")
    link.add_argument("--json", action="store_true")
    link.set_defaults(handler=_gnn_linkpred)

    graphclass = gnn.add_parser("graphclass", help="graph classification with GIN, 10-fold cross-validation")
    graphclass.add_argument("--dataset", required=True, help="TU dataset name, e.g. MUTAG, PROTEINS, NCI1")
    graphclass.add_argument("--root", required=True, help="folder holding <NAME>/<NAME>_A.txt and friends")
    graphclass.add_argument("--folds", type=int, default=10)
    graphclass.add_argument("--epochs", type=int, default=350)
    graphclass.add_argument("--hidden", type=int, default=32)
    graphclass.add_argument("--readout", choices=("sum", "mean", "max"), default="sum")
    graphclass.add_argument("--train-eps", action="store_true", help="GIN-eps instead of GIN-0")
    graphclass.add_argument("--seed", type=int, default=0)
    graphclass.add_argument("--json", action="store_true")
    graphclass.set_defaults(handler=_gnn_graphclass)

    molecules = gnn.add_parser("molecules", help="molecular property prediction from a SMILES table (GIN with "
                                                 "bond features; needs RDKit)")
    molecules.add_argument("--csv", required=True, help="a CSV with a SMILES column and target columns")
    molecules.add_argument("--smiles-column", default="smiles")
    molecules.add_argument("--targets", nargs="+", required=True, help="target column(s); blank cells = missing")
    molecules.add_argument("--task", choices=("classification", "regression"), default="classification",
                           help="classification: 0/1 labels, ROC-AUC; regression: RMSE")
    molecules.add_argument("--split", choices=("scaffold", "scaffold_balanced", "random"), default="scaffold",
                           help="80/10/10 by Bemis-Murcko scaffold (deterministic, MoleculeNet/OGB), by scaffold "
                                "shuffled per seed (chemprop's balanced split) or at random (per seed)")
    molecules.add_argument("--seeds", type=int, default=1, help="number of seeds to train (default 1)")
    molecules.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    molecules.add_argument("--epochs", type=int, help="maximum epochs (default 100)")
    molecules.add_argument("--patience", type=int, help="epochs without validation gain before stopping (default 20)")
    molecules.add_argument("--hidden", type=int, help="hidden width (default 128)")
    molecules.add_argument("--layers", type=int, help="GIN layers (default 5)")
    molecules.add_argument("--batch-size", type=int, help="molecules per batch (default 32)")
    molecules.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3)")
    molecules.add_argument("--dropout", type=float, help="dropout after every layer (default 0.5)")
    molecules.add_argument("--no-bond-features", action="store_true", help="plain GIN: bonds give edges only")
    molecules.add_argument("--runs-dir", default="runs", help="where run directories are created (default runs/)")
    molecules.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    molecules.set_defaults(handler=_gnn_molecules)

    screen = gnn.add_parser("screen", help="rank a library of SMILES with a model from `gnnseg gnn molecules`")
    screen.add_argument("--model", required=True, help="model.pt from a molecules run directory")
    screen.add_argument("--csv", required=True, help="the library: a CSV with a SMILES column")
    screen.add_argument("--smiles-column", default="smiles")
    screen.add_argument("--top", type=int, default=100, help="rows to write (default 100)")
    screen.add_argument("--target", help="which of the model's tasks to rank by (default: its first)")
    screen.add_argument("--ascending", action="store_true", help="lowest score first (e.g. a regression target)")
    screen.add_argument("--out", required=True, help="ranked CSV to write; an existing file is never overwritten")
    screen.add_argument("--json", action="store_true")
    screen.set_defaults(handler=_gnn_screen)

    smooth = gnn.add_parser("oversmooth", help="depth sweep: accuracy, MAD, MADGap and Dirichlet energy of GCN "
                                               "and its over-smoothing remedies")
    smooth.add_argument("--dataset", choices=NODE_DATASETS, default="cora", metavar="DATASET",
                        help="cora, citeseer, pubmed or karate")
    smooth.add_argument("--root", help="folder holding the raw Planetoid files (ind.<name>.*)")
    smooth.add_argument("--model", choices=("gcn",), default="gcn", help="the base model (default gcn)")
    smooth.add_argument("--depths", type=_depths, default=[1, 2, 4, 8, 16, 32],
                        help="comma-separated layer counts (default 1,2,4,8,16,32)")
    smooth.add_argument("--remedies", type=_names, default=["pairnorm", "gcnii"],
                        help="comma-separated: pairnorm, gcnii, or none (default pairnorm,gcnii)")
    smooth.add_argument("--seeds", type=int, default=1, help="seeds per point (default 1)")
    smooth.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    smooth.add_argument("--epochs", type=int, help="cap the maximum epochs (default: each variant's own, 1500)")
    smooth.add_argument("--no-karate", action="store_true", help="skip the karate-club embedding figure")
    smooth.add_argument("--runs-dir", default="runs", help="where run directories are created (default runs/)")
    smooth.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    smooth.set_defaults(handler=_gnn_oversmooth)

    evaluate = gnn.add_parser("eval", help="re-evaluate a saved node classifier")
    evaluate.add_argument("--checkpoint", required=True)
    evaluate.add_argument("--root", help="folder holding the raw Planetoid files")
    evaluate.add_argument("--dataset", type=_dataset, help="default: the checkpoint's dataset")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(handler=_gnn_eval)

    seg = halves.add_parser("seg", help="biomedical image segmentation").add_subparsers(dest="seg_command",
                                                                                        required=True)
    convert = seg.add_parser("convert", help="turn a shared 2D dataset into the nnU-Net raw layout")
    convert.add_argument("dataset", choices=("isbi2012", "drive", "kvasir"))
    convert.add_argument("source", help="e.g. ../shared/datasets/drive")
    convert.add_argument("target", help="new folder for the raw dataset")
    convert.add_argument("--json", action="store_true")
    convert.set_defaults(handler=_seg_convert)

    plan = seg.add_parser("plan", help="fingerprint a raw dataset and derive its plans")
    plan.add_argument("dataset_dir", help="raw dataset folder (dataset.json, imagesTr, labelsTr)")
    plan.add_argument("--work-dir", help="where fingerprint, plans and preprocessed data go (default DATASET_work)")
    plan.add_argument("--memory-gb", type=float, default=8.0, help="memory budget for one training step")
    plan.add_argument("--device", choices=("gpu", "cpu"), default="gpu",
                      help="cpu: the budget is float32 RAM (half the activations of a mixed-precision GPU)")
    plan.add_argument("--base-features", type=int, default=32, help="first-stage width (nnU-Net: 32)")
    plan.add_argument("--overwrite", action="store_true", help="replace an existing plans.json")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(handler=_seg_plan)

    prep = seg.add_parser("preprocess", help="preprocess the training cases for one configuration")
    prep.add_argument("work_dir")
    prep.add_argument("--configuration", "-c", default="2d")
    prep.add_argument("--json", action="store_true")
    prep.set_defaults(handler=_seg_preprocess)

    fit = seg.add_parser("train", help="train one cross-validation fold")
    fit.add_argument("work_dir")
    fit.add_argument("--configuration", "-c", default="2d")
    fit.add_argument("--fold", "-f", default="0", help="0..4 or 'all'")
    fit.add_argument("--epochs", type=int, default=1000)
    fit.add_argument("--iterations", type=int, default=250, help="iterations per epoch")
    fit.add_argument("--batch-size", type=int, help="override the plans' batch size")
    fit.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    fit.add_argument("--network", choices=_Names("gnnseg.seg.unet.network", "NETWORKS"), default="unet",
                     metavar="NETWORK", help="unet (the plain U-Net), or U-Mamba with Mamba layers at the bottleneck "
                                             "(umamba_bot) or after every encoder stage (umamba_enc)")
    fit.add_argument("--lr", type=float)
    fit.add_argument("--precision", choices=_Names("gnnseg.seg.unet.train", "PRECISIONS"), default="float32",
                     metavar="PRECISION", help="float32, or bfloat16: forward passes under autocast, about 2x faster "
                                               "on CPUs with AVX512-BF16")
    fit.add_argument("--device", help=DEVICE_HELP)
    fit.add_argument("--elastic", type=_probability, default=0.0, metavar="P",
                     help="probability of the original U-Net's elastic deformation per patch (EM images: 0.2)")
    fit.add_argument("--intensity-shift", type=_probability, default=0.0, metavar="P",
                     help="probability of an additive shift of the normalised intensities (a scan brighter or "
                          "darker than the training set, e.g. contrast-enhanced CT after unenhanced training)")
    fit.add_argument("--label-intensity-shift", type=_probability, default=0.0, metavar="P",
                     help="probability of a shift drawn for each labelled structure of a patch on its own (contrast "
                          "agent brightens organs by different amounts)")
    fit.add_argument("--no-mirroring", action="store_true",
                     help="no mirroring augmentation (left and right matter: liver vs spleen)")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--runs-dir", default="runs")
    fit.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    fit.add_argument("--json", action="store_true")
    fit.set_defaults(handler=_seg_train)

    infer = seg.add_parser("predict", help="segment every case of a folder with a trained run")
    infer.add_argument("-i", "--input", required=True)
    infer.add_argument("-o", "--output", required=True)
    infer.add_argument("-m", "--model", required=True, help="a run folder made by `gnnseg seg train`")
    infer.add_argument("--checkpoint", default="checkpoint_best.pt")
    infer.add_argument("--mirror", action="store_true",
                       help="test-time mirroring on the axes the run was trained to mirror (all by default)")
    infer.add_argument("--keep-largest", type=_int_list, default=[], metavar="L1,L2",
                       help="reduce these labels to their largest connected component (for one-piece organs)")
    infer.add_argument("--device", help=DEVICE_HELP)
    infer.add_argument("--json", action="store_true")
    infer.set_defaults(handler=_seg_predict)

    score = seg.add_parser("metrics", help="Dice, NSD and HD95 of predictions against ground truth")
    score.add_argument("--pred", required=True)
    score.add_argument("--gt", required=True)
    score.add_argument("--tolerance", type=float, default=2.0, help="NSD tolerance in mm")
    score.add_argument("--json", action="store_true")
    score.set_defaults(handler=_seg_metrics)

    segment = seg.add_parser("segment", help="box-prompted segmentation of a 2D image or a 3D volume (MedSAM)")
    segment.add_argument("--image", help="a PNG / JPEG / TIFF image")
    segment.add_argument("--box", type=_box, action="append", help="x0,y0,x1,y1 in pixels (repeatable)")
    segment.add_argument("--volume", help="a NIfTI file or a DICOM series folder")
    segment.add_argument("--box3d", type=_box3d, action="append",
                         help="x_min,y_min,z_min,x_max,y_max,z_max in voxel indices of the (Z, Y, X) array")
    segment.add_argument("--npz", help="a CVPR 2024 'MedSAM on Laptop' case (imgs, boxes); writes its segs npz")
    segment.add_argument("--modality", choices=("ct", "mr"), default="ct", help="volume intensity handling")
    segment.add_argument("--window", default="soft_tissue", help="CT window preset (soft_tissue, lung, brain, bone)")
    segment.add_argument("-o", "--output", required=True,
                         help="mask PNG (2D), NIfTI (3D) or npz (--npz); never overwritten")
    _add_model_arguments(segment)
    segment.add_argument("--json", action="store_true")
    segment.set_defaults(handler=_seg_segment)

    tune = seg.add_parser("finetune", help="fine-tune a box-prompted model on image/mask folders")
    tune.add_argument("--images", required=True, help="2D images or NIfTI volumes")
    tune.add_argument("--masks", required=True, help="label masks with the same names")
    tune.add_argument("--allow-unmatched", action="store_true", help=UNMATCHED_HELP)
    tune.add_argument("--val-images")
    tune.add_argument("--val-masks")
    tune.add_argument("--checkpoint", help="start from this: " + _checkpoint_help())
    tune.add_argument("--normalization", choices=NORMALIZATIONS, help=NORMALIZATION_HELP)
    tune.add_argument("--model", help="train this configuration from scratch instead (e.g. vit_cpu)")
    tune.add_argument("--modality", choices=("ct", "mr"), default="ct", help="how NIfTI volumes are scaled")
    tune.add_argument("-o", "--output", required=True, help="run folder")
    tune.add_argument("--rounds", type=int, default=20)
    tune.add_argument("--iterations", type=int, default=100, help="iterations per round")
    tune.add_argument("--batch-size", type=int, default=8)
    tune.add_argument("--lr", type=float, default=1e-4)
    tune.add_argument("--box-shift", type=int, default=20, help="random box growth, 0..N pixels per side")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--resume", action="store_true", help="continue the run in --output")
    tune.add_argument("--json", action="store_true")
    tune.set_defaults(handler=_seg_finetune)

    distil = seg.add_parser("distill", help="Lite MedSAM: distil a TinyViT student from a teacher checkpoint, then "
                                            "fine-tune it, on image/mask folders")
    distil.add_argument("--teacher", required=True, help="teacher checkpoint (e.g. medsam_vit_b.pth) or model name")
    distil.add_argument("--normalization", choices=NORMALIZATIONS, help="the teacher's " + NORMALIZATION_HELP)
    distil.add_argument("--student", default="lite_medsam", help="student configuration (default: lite_medsam)")
    distil.add_argument("--allow-unmatched", action="store_true", help=UNMATCHED_HELP)
    distil.add_argument("--images", required=True, help="2D images or NIfTI volumes")
    distil.add_argument("--masks", required=True, help="label masks with the same names")
    distil.add_argument("--modality", choices=("ct", "mr"), default="ct", help="how NIfTI volumes are scaled")
    distil.add_argument("-o", "--output", required=True, help="run folder (embedding cache, logs, model.pt)")
    distil.add_argument("--distill-iterations", type=int, default=2000, help="stage 1 steps")
    distil.add_argument("--rounds", type=int, default=10, help="stage 2 rounds")
    distil.add_argument("--iterations", type=int, default=100, help="stage 2 iterations per round")
    distil.add_argument("--batch-size", type=int, default=8)
    distil.add_argument("--lr", type=float, default=1e-4, help="stage 2 learning rate")
    distil.add_argument("--seed", type=int, default=0)
    distil.add_argument("--json", action="store_true")
    distil.set_defaults(handler=_seg_distill)

    export = seg.add_parser("export-onnx", help="write a whole-image model as encoder.onnx + decoder.onnx "
                                                "(run with onnxruntime by passing the folder as --checkpoint)")
    _add_model_arguments(export, tta_help=None, checkpoint_required=True)  # the default may be box-centred
    export.add_argument("-o", "--output", required=True, help="a new or empty folder")
    export.add_argument("--json", action="store_true")
    export.set_defaults(handler=_seg_export_onnx)

    assess = seg.add_parser("evaluate", help="DSC and NSD of box-prompted segmentation against masks")
    assess.add_argument("--images", required=True)
    assess.add_argument("--masks", required=True)
    assess.add_argument("--allow-unmatched", action="store_true", help=UNMATCHED_HELP)
    assess.add_argument("--box-margin", type=int, default=5, help="pixels added around each ground-truth box")
    assess.add_argument("--tolerance", type=float, default=2.0, help="NSD tolerance in pixels (mm for volumes)")
    assess.add_argument("--modality", choices=("ct", "mr"), default="ct", help="how NIfTI volumes are scaled")
    _add_model_arguments(assess)
    assess.add_argument("--json", action="store_true")
    assess.set_defaults(handler=_seg_evaluate)

    lite = seg.add_parser("lite", help="the CVPR 2024 'MedSAM on Laptop' challenge format: folders of npz cases"
                          ).add_subparsers(dest="lite_command", required=True)
    run = lite.add_parser("predict", help="write segs for every npz case of a folder")
    run.add_argument("--input", required=True, help="folder of 2DBox_*.npz / 3DBox_*.npz cases (imgs, boxes)")
    run.add_argument("--output", required=True, help="folder for the segs files (same names; never overwritten)")
    run.add_argument("--resume", action="store_true", help="keep the segs files already in --output (an "
                     "interrupted run's) and predict the other cases")
    _add_model_arguments(run)
    run.add_argument("--json", action="store_true")
    run.set_defaults(handler=_lite_predict)
    score = lite.add_parser("evaluate", help="DSC and NSD per case as the challenge scored them")
    score.add_argument("--pred", required=True, help="folder of segs files")
    score.add_argument("--gt", required=True, help="folder of ground-truth files (gts, and spacing for 3D)")
    score.add_argument("--json", action="store_true")
    score.set_defaults(handler=_lite_evaluate)
    convert = lite.add_parser("convert", help="write the held-out Kvasir-SEG images and the TotalSegmentator CT "
                                              "as challenge cases (imgs/ and gts/)")
    convert.add_argument("--data", default="../shared/datasets")
    convert.add_argument("--output", required=True)
    convert.add_argument("--json", action="store_true")
    convert.set_defaults(handler=_lite_convert)

    serve = halves.add_parser("serve", help="HTTP service and web page for box-prompted segmentation")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--token", help="require this token on every API request (default: the environment's "
                       "GNNSEG_SERVE_TOKEN; a random one when binding to an address other than loopback)")
    serve.add_argument("--allowed-host", action="append", metavar="NAME",
                       help="a host name the service answers to, besides the bind address and localhost "
                            "(repeatable; '*' for any; default for a non-loopback bind: any, with the token)")
    serve.add_argument("--max-upload-mb", type=int, default=256)
    serve.add_argument("--max-boxes", type=int, default=64, help="boxes per request")
    serve.add_argument("--max-megapixels", type=float, default=4096 * 4096 / 1e6,
                       help="largest 2D image (default 16.8: 4096 x 4096; memory grows about 20 bytes a pixel)")
    serve.add_argument("--max-megavoxels", type=float, default=64.0, help="largest volume")
    serve.add_argument("--store-mb", type=int, default=2048, help="memory for uploaded pixels (LRU eviction)")
    serve.add_argument("--cache-mb", type=int, default=512, help="memory for image embeddings (LRU eviction)")
    serve.add_argument("--decoder-dtype", choices=["float32", "bfloat16"], default="float32",
                       help="bfloat16: the mask decoder in bfloat16 (PyTorch models; about 2x faster per box on "
                            "CPUs with AVX512-BF16 or AMX, masks agree on >99.9%% of pixels)")
    serve.add_argument("--compile", action="store_true",
                       help="compile the mask decoder for one box per request with torch.compile (needs a C++ "
                            "compiler; adds 20-40 s to the start the first time on a machine)")
    _add_model_arguments(serve, TTA_HELP + "; every box costs that many passes")
    serve.add_argument("--json", action="store_true")
    serve.set_defaults(handler=_serve)

    demo = halves.add_parser("demo", help="the offline demo: karate-club GCN embeddings by depth and a U-Net "
                                          "on generated cells")
    demo.add_argument("--runs-dir", default="runs")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(handler=_demo)
    return parser


def _close_runs(status: str) -> list[str]:
    """Mark the runs this command made (if it made any: only then is the module loaded)."""
    runs = sys.modules.get("gnnseg.core.runs")
    return [str(path) for path in runs.close_runs(status)] if runs is not None else []


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.handler(args)
    except KeyboardInterrupt:
        marked = _close_runs("interrupted")
        print("gnnseg: interrupted" + (f"; {', '.join(marked)} marked interrupted (--resume continues a run "
                                       "where the command has it)" if marked else ""), file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError, KeyError, ImportError) as exc:
        _close_runs("failed")
        print(f"gnnseg: error: {exc}", file=sys.stderr)
        return 2
    _close_runs("complete")
    if "torch.distributed" in sys.modules:      # only a command that imported torch can have joined a group
        from gnnseg.core.distributed import leave_process_group
        leave_process_group()      # under torchrun: every rank finishes before any rank closes its connections
    _print(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
