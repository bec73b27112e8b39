"""``gnnseg seg ...`` and ``gnnseg serve``: the segmentation commands. Each handler imports what it runs, so
``gnnseg seg segment`` with an ONNX export never imports torch."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from gnnseg.cli.arguments import (
    DEVICE_HELP,
    LazyChoices,
    box,
    box3d,
    int_list,
    label_names,
    point,
    probability,
)
from gnnseg.seg.io.label_painter import OVERLAP_RULES
from gnnseg.seg.sam.modeling.config import NORMALIZATIONS, PREPROCESSINGS
from gnnseg.seg.unet.precision_names import PRECISION_NAMES

if TYPE_CHECKING:
    from gnnseg.seg.unet.postprocess import PostprocessingRule

OVERLAPS_HELP = ("who keeps a pixel two objects claim: smaller (default: the smaller object) or box-order (the "
                 "later box, as the challenge baseline paints)")
TTA_HELP = ("test-time augmentation: none (default), flip (the image and its mirror, 2 passes) or d4 (4 quarter "
            "turns, each also mirrored, 8 passes); probabilities are averaged")
ZOOM_HELP = ("answer each box on a window CONTEXT box sizes wider on each side, at least the model's input size and "
             "inside the image, instead of the whole image (whole-image models; one encoder pass per box; 0.5 is "
             "what the benchmarks measure)")
ZOOM_SCALES_HELP = ("with --zoom: N windows per box, each half as wide as the one before (and enlarged up to twice "
                    "as much), probabilities averaged; N encoder passes per box (default 1; 2 is what the benchmarks "
                    "measure)")


CHECKPOINT_HELP = ("a model name ({names}; default {default}), a checkpoint (SAM, MedSAM, MobileSAM, Lite MedSAM "
                   "or gnnseg layout), an ONNX export folder or a Hugging Face SAM folder (config.json + "
                   "model.safetensors)")
NORMALIZATION_HELP = ("input normalisation, overriding what the checkpoint implies: minmax (MedSAM, Lite MedSAM) or "
                      "imagenet (SAM, MobileSAM); needed for a flat ViT checkpoint, whose tensors do not tell")
UNMATCHED_HELP = ("go on when an image has no mask of the same name (by default that is an error listing every "
                  "such image); names are matched whole, without their extension")
PREPROCESSING_HELP = ("Lite MedSAM-style models: gnnseg (area averaging in floating point, fractional boxes) or "
                      "official (the released LiteMedSAM code's OpenCV resize and truncated boxes, reproducing its "
                      "masks; needs opencv-python-headless); default: the model's own")
UNET_CHECKPOINT = "checkpoint_final.pth"
"""The U-Net checkpoint (gnnseg's and nnU-Net's) that `seg predict` and `seg export-onnx --unet` use unless told
otherwise."""
DATASET_HELP = ("an nnU-Net dataset ID (501) or name (Dataset501_Liver), found through the environment variables "
                "nnUNet_raw, nnUNet_preprocessed and nnUNet_results")


def _work_dir(args: argparse.Namespace) -> str:
    """The work folder: WORK_DIR, or with -d the dataset's folder in nnUNet_preprocessed."""
    if bool(args.work_dir) == bool(args.dataset):
        raise ValueError("give either WORK_DIR or -d DATASET (then the work folder is "
                         "$nnUNet_preprocessed/DatasetXXX_Name)")
    if args.work_dir:
        return args.work_dir
    from gnnseg.seg.unet.nnunet_paths import PREPROCESSED, dataset_folder

    return str(dataset_folder(args.dataset, PREPROCESSED))


def _results_dataset(reference: str):
    """The dataset's folder in nnUNet_results (which must be set)."""
    from gnnseg.seg.unet.nnunet_paths import RESULTS, base_folder, dataset_name

    return base_folder(RESULTS) / dataset_name(reference)


def _checkpoint_help() -> str:
    """--checkpoint's help with the model names, read from the torch-free registry without loading a model."""
    from gnnseg.seg.sam.shipped import DEFAULT_MODEL, MODEL_NAMES

    return CHECKPOINT_HELP.format(names=", ".join(MODEL_NAMES), default=DEFAULT_MODEL)


def _add_model_arguments(parser: argparse.ArgumentParser, tta_help: str | None = TTA_HELP) -> None:
    """--checkpoint, --normalization, --preprocessing and (unless ``tta_help`` is None) --tta, --zoom and
    --zoom-scales: which box-prompted model answers and how (:func:`_model_choice`)."""
    parser.add_argument("--checkpoint", help=_checkpoint_help())
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


def _seg_convert(args: argparse.Namespace) -> dict:
    if args.dataset == "folder":
        from gnnseg.seg.io import convert_folder

        if not (args.images and args.masks and args.out) or args.source or args.target:
            raise ValueError("seg convert folder takes --images DIR --masks DIR --out DIR (no positional folders)")
        dataset = convert_folder(args.images, args.masks, args.out, name=args.name, labels=args.labels)
        return {"dataset": str(dataset.root), "training_cases": len(dataset.case_ids()),
                "labels": dataset.labels, "file_ending": dataset.file_ending}
    from gnnseg.seg.io import CONVERTERS

    given = [flag for flag in ("images", "masks", "out", "name", "labels") if getattr(args, flag) is not None]
    if not (args.source and args.target) or given:
        raise ValueError(f"seg convert {args.dataset} takes SOURCE and TARGET folders"
                         + (f" (--{', --'.join(given)} belong to seg convert folder)" if given else ""))
    dataset = CONVERTERS[args.dataset](args.source, args.target)
    return {"dataset": str(dataset.root), "training_cases": len(dataset.case_ids()),
            "test_cases": len(dataset.case_ids("Ts"))}


def _seg_plan(args: argparse.Namespace) -> dict:
    from gnnseg.seg.unet.pipeline import plan_dataset

    if bool(args.dataset_dir) == bool(args.dataset):
        raise ValueError("give either DATASET_DIR or -d DATASET (a dataset of nnUNet_raw)")
    if args.dataset:
        from gnnseg.seg.unet.nnunet_paths import PREPROCESSED, RAW, base_folder, dataset_folder

        if args.work_dir:
            raise ValueError("with -d the work folder is $nnUNet_preprocessed/DatasetXXX_Name; drop --work-dir")
        from gnnseg.seg.unet.pipeline import NNUNET_FOLDER_FINGERPRINT_FILE as fingerprint_name

        dataset_dir = dataset_folder(args.dataset, RAW)
        work_dir = base_folder(PREPROCESSED) / dataset_dir.name
    else:
        from gnnseg.seg.unet.pipeline import FINGERPRINT_FILE as fingerprint_name

        dataset_dir, work_dir = args.dataset_dir, args.work_dir or f"{args.dataset_dir.rstrip('/')}_work"
    return plan_dataset(dataset_dir, work_dir,
                        memory_gb=args.memory_gb, device=args.device, base_features=args.base_features,
                        overwrite=args.overwrite, planner=args.planner, fingerprint_name=fingerprint_name)


def _seg_preprocess(args: argparse.Namespace) -> dict:
    from gnnseg.seg.unet.pipeline import preprocess

    return preprocess(_work_dir(args), args.configuration)


def _seg_train(args: argparse.Namespace) -> dict:
    from gnnseg.core.freed_memory import keep_freed_memory
    from gnnseg.seg.unet.augment import AugmentationConfig
    from gnnseg.seg.unet.pipeline import train
    from gnnseg.seg.unet.train import TrainConfig

    keep_freed_memory()   # every step's activations then reuse the pages the previous step freed

    augmentation = AugmentationConfig(elastic_p=args.elastic, shift_p=args.intensity_shift,
                                      label_shift_p=args.label_intensity_shift,
                                      mirror_axes=() if args.no_mirroring else None)
    config = TrainConfig(epochs=args.epochs, iterations_per_epoch=args.iterations, optimizer=args.optimizer,
                         lr=args.lr, seed=args.seed, batch_size=args.batch_size, network=args.network,
                         precision=args.precision, augmentation=augmentation)
    fold = args.fold if args.fold == "all" else int(args.fold)
    show_progress = False if args.json else None
    if args.dataset:
        from gnnseg.seg.unet.results_layout import TRAINER, train_in_results

        if args.resume not in (None, True) or args.runs_dir:
            raise ValueError("with -d the fold trains into $nnUNet_results/DatasetXXX_Name/<Trainer>__gnnsegPlans__"
                             "<configuration>/fold_<k>: drop --runs-dir, and continue it with --c")
        default_trainer = TRAINER if args.network == "unet" else f"{TRAINER}_{args.network}"
        return train_in_results(_work_dir(args), _results_dataset(args.dataset), args.configuration, fold, config,
                                trainer=args.trainer or default_trainer, resume=args.resume is True,
                                show_progress=show_progress, device=args.device)
    if args.resume is True or args.trainer:
        raise ValueError("--c and -tr are for -d (nnU-Net's results layout); continue a run folder with "
                         "--resume RUN_DIR")
    return train(_work_dir(args), args.configuration, fold, config, runs_root=args.runs_dir or "runs",
                 resume_run=args.resume, show_progress=show_progress, device=args.device)


def _seg_predict(args: argparse.Namespace) -> dict:
    """Predict, each case's labels reduced by --postprocessing (read and checked before anything is predicted)."""
    rule = None
    if args.postprocessing:
        from gnnseg.seg.unet.postprocess import PostprocessingRule

        if args.keep_largest:
            raise ValueError("--postprocessing and --keep-largest are two post-processings; give one")
        rule = PostprocessingRule.load(args.postprocessing)
    result = _predict_cases(args, rule)
    if rule is not None:
        result["postprocessing"] = {"file": args.postprocessing, "steps": rule.to_json()}
    return result


def _seg_ensemble(args: argparse.Namespace) -> dict:
    from gnnseg.seg.unet.prediction_ensemble import ensemble_folders

    return ensemble_folders(args.input, args.output, postprocessing=args.postprocessing,
                            show_progress=False if args.json else None)


def _predict_models(args: argparse.Namespace) -> list[str]:
    """The model folders of `seg predict`: -m's, or with -d the <Trainer>__<Plans>__<configuration> folder of the
    dataset in nnUNet_results."""
    if bool(args.model) == bool(args.dataset):
        raise ValueError("give either -m MODEL_DIR or -d DATASET -c CONFIGURATION")
    if args.model:
        if args.configuration or args.trainer or args.plans:
            raise ValueError("-c, -tr and -p choose a model of nnUNet_results with -d; -m names the folder itself")
        return args.model
    from gnnseg.seg.unet.results_layout import PLANS_IDENTIFIER, TRAINER, model_folder

    if not args.configuration:
        raise ValueError("-d needs -c CONFIGURATION (e.g. -c 2d or -c 3d_fullres)")
    return [str(model_folder(_results_dataset(args.dataset), args.configuration, args.trainer or TRAINER,
                             args.plans or PLANS_IDENTIFIER))]


def _predict_cases(args: argparse.Namespace, postprocessing: PostprocessingRule | None) -> dict:
    from gnnseg.core.freed_memory import keep_freed_memory
    from gnnseg.seg.io.dicom_seg import is_dicom_seg_path
    from gnnseg.seg.unet.onnx_predictor import is_unet_onnx_export

    models = _predict_models(args)
    keep_freed_memory()   # each window's forward then reuses the pages the previous one freed
    show_progress = False if args.json else None
    if len(models) == 1 and is_unet_onnx_export(models[0]):   # torch-free: numpy + onnxruntime, nothing else
        from gnnseg.seg.unet.onnx_predictor import predict_onnx_folder

        given = [flag for flag, value in (("--folds", args.folds), ("--checkpoint", args.checkpoint),
                                          ("--save-probabilities", args.save_probabilities),
                                          ("--device", args.device),
                                          ("--precision", args.precision != "float32")) if value]
        if given or is_dicom_seg_path(args.output):
            raise ValueError(f"{', '.join(given) or 'DICOM-SEG output'}: not for an ONNX export (its folds and "
                             f"checkpoint were chosen at export; it runs in float32 on the CPU with onnxruntime)")
        return predict_onnx_folder(models[0], args.input, args.output, mirror=not args.disable_tta,
                                   step_size=args.step_size, keep_largest=tuple(args.keep_largest),
                                   postprocessing=postprocessing, show_progress=show_progress)
    from gnnseg.seg.unet.nnunet_models import is_nnunet_model_folder
    from gnnseg.seg.unet.pipeline import predict_dicom_seg, predict_folder
    from gnnseg.seg.unet.results_layout import is_gnnseg_model_folder

    checkpoint = args.checkpoint or UNET_CHECKPOINT
    step_size = args.step_size or 0.5
    if len(models) == 1 and is_nnunet_model_folder(models[0]) and not is_gnnseg_model_folder(models[0]):
        from gnnseg.seg.unet.nnunet_predict import predict_nnunet_folder

        if args.keep_largest:
            raise ValueError("--keep-largest is for gnnseg models; for an nnU-Net model use --postprocessing (the "
                             "rule find-best-configuration chose)")
        if is_dicom_seg_path(args.output):
            raise ValueError("DICOM-SEG output is for gnnseg models; an nnU-Net model writes label maps into a folder")
        return predict_nnunet_folder(models[0], args.input, args.output, folds=args.folds, checkpoint=checkpoint,
                                     step_size=step_size, use_mirroring=not args.disable_tta,
                                     save_probabilities=args.save_probabilities, device=args.device,
                                     precision=args.precision, postprocessing=postprocessing,
                                     show_progress=show_progress)
    options = {"folds": args.folds, "checkpoint": checkpoint, "step": step_size, "mirror": not args.disable_tta,
               "keep_largest": args.keep_largest, "postprocessing": postprocessing, "device": args.device,
               "precision": args.precision}
    if is_dicom_seg_path(args.output):
        if args.save_probabilities:
            raise ValueError("--save-probabilities writes beside label maps in a folder, not with a DICOM-SEG output")
        return predict_dicom_seg(models, args.input, args.output, **options)
    return predict_folder(models, args.input, args.output, save_probabilities=args.save_probabilities,
                          show_progress=show_progress, **options)


def _seg_find_best_configuration(args: argparse.Namespace) -> dict:
    from gnnseg.seg.unet.trained_folds import find_best_configuration

    if args.dataset:
        from gnnseg.seg.unet.results_layout import PLANS_IDENTIFIER, TRAINER

        if args.runs_dir:
            raise ValueError("with -d the folds are searched in $nnUNet_results/DatasetXXX_Name; drop --runs-dir")
        results = _results_dataset(args.dataset)
        runs_dir, trainer_plans = results, f"{args.trainer or TRAINER}__{args.plans or PLANS_IDENTIFIER}"
        output = args.output or results / f"model_selection_folds_{'_'.join(map(str, args.folds))}"
    else:
        if args.trainer or args.plans:
            raise ValueError("-tr and -p choose model folders of nnUNet_results with -d")
        runs_dir, trainer_plans, output = args.runs_dir or "runs", None, args.output
    return find_best_configuration(_work_dir(args), args.configurations, args.folds, runs_dir=runs_dir,
                                   trainer_plans=trainer_plans, runs=args.run or (), output=output,
                                   allow_ensembling=not args.disable_ensembling,
                                   show_progress=False if args.json else None)


def _seg_metrics(args: argparse.Namespace) -> dict:
    from gnnseg.seg.unet.pipeline import metrics_folder

    return metrics_folder(args.pred, args.gt, tolerance_mm=args.tolerance)


def _seg_segment(args: argparse.Namespace) -> dict:
    import numpy as np

    from gnnseg.seg.sam.segment_files import segment_challenge_file, segment_image, segment_volume_file

    if sum(map(bool, (args.image, args.volume, args.npz))) != 1:
        raise ValueError("give exactly one of --image (with --box), --volume (with --box3d) or --npz")
    if args.npz:
        return segment_challenge_file(args.npz, args.output, choice=_model_choice(args), overlaps=args.overlaps)
    if args.image:
        return segment_image(args.image, _image_objects(args), args.output, choice=_model_choice(args),
                             overlaps=args.overlaps)
    if not args.box3d:
        raise ValueError("--volume needs at least one --box3d x_min,y_min,z_min,x_max,y_max,z_max")
    return segment_volume_file(args.volume, np.array(args.box3d), args.output, modality=args.modality,
                               window=args.window, choice=_model_choice(args), overlaps=args.overlaps)


def _image_objects(args: argparse.Namespace) -> list:
    """The objects of ``seg segment --image``: one per --box, the --point clicks with the one box (or alone), or
    those of a --prompts file."""
    import numpy as np

    from gnnseg.seg.sam.segment_files import ObjectPrompt, read_prompts_file

    if args.prompts:
        if args.box or args.point:
            raise ValueError("give the objects either in --prompts FILE or as --box / --point, not both")
        return read_prompts_file(args.prompts)
    if not args.box and not args.point:
        raise ValueError("--image needs at least one --box x0,y0,x1,y1, --point x,y,label or --prompts FILE")
    if not args.point:
        return [ObjectPrompt(box=np.array(b)) for b in args.box]
    if args.box and len(args.box) > 1:
        raise ValueError("--point refines one object: give at most one --box with it (--prompts FILE holds many "
                         "objects, each with its own points)")
    points = np.array([p[:2] for p in args.point])
    return [ObjectPrompt(box=np.array(args.box[0]) if args.box else None, points=points,
                         labels=np.array([p[2] for p in args.point]))]


def _seg_finetune(args: argparse.Namespace) -> dict:
    from gnnseg.seg.sam.folder_commands import finetune_folders
    from gnnseg.seg.sam.training.finetune import FinetuneConfig

    if args.click_rounds < 0:
        raise ValueError(f"--click-rounds must be 0 or more, got {args.click_rounds}")
    config = FinetuneConfig(rounds=args.rounds, iterations_per_round=args.iterations, batch_size=args.batch_size,
                            lr=args.lr, box_shift=args.box_shift, seed=args.seed, click_rounds=args.click_rounds,
                            freeze_prompt_encoder=args.click_rounds == 0, zoom=args.zoom)
    return finetune_folders(args.images, args.masks, args.output, val_images=args.val_images,
                            val_masks=args.val_masks, checkpoint=args.checkpoint, model=args.model,
                            normalization=args.normalization,
                            modality=args.modality, config=config, resume=args.resume,
                            allow_unmatched=args.allow_unmatched, device=args.device)


def _seg_distill(args: argparse.Namespace) -> dict:
    from gnnseg.seg.sam.folder_commands import distill_folders
    from gnnseg.seg.sam.training.distill import DistillConfig
    from gnnseg.seg.sam.training.finetune import FinetuneConfig

    distill = DistillConfig(iterations=args.distill_iterations, batch_size=args.batch_size, seed=args.seed)
    stage2 = FinetuneConfig(rounds=args.rounds, iterations_per_round=args.iterations, batch_size=args.batch_size,
                            lr=args.lr, box_shift=5, freeze_prompt_encoder=False, seed=args.seed)
    return distill_folders(args.images, args.masks, args.output, teacher=args.teacher, student=args.student,
                           teacher_normalization=args.normalization, modality=args.modality, distill=distill,
                           config=stage2, allow_unmatched=args.allow_unmatched, device=args.device)


def _seg_export_onnx(args: argparse.Namespace) -> dict:
    if args.unet:
        sam_options = [flag for flag, value in (("--checkpoint", args.checkpoint), ("--normalization",
                       args.normalization), ("--preprocessing", args.preprocessing)) if value is not None]
        if sam_options:
            raise ValueError(f"--unet exports a U-Net; {', '.join(sam_options)} choose a SAM model: give one or "
                             "the other")
        from gnnseg.seg.unet.onnx_export import export_unet_folders

        return export_unet_folders(args.unet, args.output, checkpoint=args.unet_checkpoint, folds=args.unet_folds)
    if args.unet_checkpoint is not None or args.unet_folds is not None:
        raise ValueError("--unet-checkpoint and --unet-folds choose within a --unet model; give --unet MODEL_DIR")
    from gnnseg.seg.sam.folder_commands import export_onnx_folder

    return export_onnx_folder(args.output, choice=_model_choice(args))


def _seg_export_hf(args: argparse.Namespace) -> dict:
    from gnnseg.seg.sam.hf_checkpoint import export_hf, refuse_nonempty_folder

    refuse_nonempty_folder(args.output)  # before the model loads
    folder = export_hf(_model_choice(args).load(), args.output)
    return {"output": str(folder), "files": sorted(path.name for path in folder.iterdir())}


def _seg_evaluate(args: argparse.Namespace) -> dict:
    from gnnseg.seg.sam.folder_commands import evaluate_folders

    result = evaluate_folders(args.images, args.masks, choice=_model_choice(args), box_margin=args.box_margin,
                              tolerance=args.tolerance, modality=args.modality,
                              allow_unmatched=args.allow_unmatched, clicks=args.clicks)
    if not args.json:
        result.pop("per_object")
    return result


def _lite_predict(args: argparse.Namespace) -> dict:
    from gnnseg.seg.sam.challenge import predict_cases

    result = predict_cases(args.input, args.output, choice=_model_choice(args),
                           show_progress=False if args.json else None, resume=args.resume, overlaps=args.overlaps)
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


def add_seg_commands(halves: argparse._SubParsersAction) -> None:
    seg = halves.add_parser("seg", help="biomedical image segmentation").add_subparsers(dest="seg_command",
                                                                                        required=True)
    convert = seg.add_parser("convert", help="turn a shared 2D dataset, or folders of images and masks, into the "
                                             "nnU-Net raw layout")
    convert.add_argument("dataset", choices=("isbi2012", "drive", "kvasir", "folder"))
    convert.add_argument("source", nargs="?", help="e.g. ../shared/datasets/drive")
    convert.add_argument("target", nargs="?", help="new folder for the raw dataset")
    convert.add_argument("--images", help="folder: the images (2D png / tif / jpg, or 3D nii / mha / nrrd)")
    convert.add_argument("--masks", help="folder: their label masks, paired with the images by file stem")
    convert.add_argument("--out", help="folder: the new raw dataset folder (never overwritten)")
    convert.add_argument("--name", help="folder: the dataset's name (default: the --out folder's, e.g. "
                                        "Dataset501_Liver)")
    convert.add_argument("--labels", type=label_names, metavar="NAME=VALUE,...",
                         help="folder: the labels' names (default: label_1, ... for the values in the masks)")
    convert.add_argument("--json", action="store_true")
    convert.set_defaults(handler=_seg_convert)

    plan = seg.add_parser("plan", help="fingerprint a raw dataset and derive its plans")
    plan.add_argument("dataset_dir", nargs="?", help="raw dataset folder (dataset.json, imagesTr, labelsTr)")
    plan.add_argument("-d", "--dataset", help=DATASET_HELP + "; the work folder is then "
                      "$nnUNet_preprocessed/DatasetXXX_Name")
    plan.add_argument("--work-dir", help="where fingerprint, plans and preprocessed data go (default DATASET_work)")
    plan.add_argument("--memory-gb", type=float, default=None,
                      help="memory budget for one training step (default: the planner's, 8 GB; resenc_l 24, "
                           "resenc_xl 40)")
    plan.add_argument("--device", choices=("gpu", "cpu"), default="gpu",
                      help="cpu: the budget is float32 RAM (half the activations of a mixed-precision GPU)")
    plan.add_argument("--base-features", type=int, default=32, help="first-stage width (nnU-Net: 32)")
    plan.add_argument("--planner", choices=LazyChoices("gnnseg.seg.unet.planner_presets", "PRESETS"),
                      default="default", metavar="{default,resenc_m,resenc_l,resenc_xl}",
                      help="nnU-Net's default planner, or a Residual Encoder preset (nnU-Net ResEnc M / L / XL: "
                           "a ResidualEncoderUNet planned for 8 / 24 / 40 GB)")
    plan.add_argument("--overwrite", action="store_true", help="replace an existing plans.json")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(handler=_seg_plan)

    prep = seg.add_parser("preprocess", help="preprocess the training cases for one configuration")
    prep.add_argument("work_dir", nargs="?")
    prep.add_argument("-d", "--dataset", help=DATASET_HELP + " (its work folder in nnUNet_preprocessed)")
    prep.add_argument("--configuration", "-c", default="2d")
    prep.add_argument("--json", action="store_true")
    prep.set_defaults(handler=_seg_preprocess)

    fit = seg.add_parser("train", help="train one cross-validation fold")
    fit.add_argument("work_dir", nargs="?")
    fit.add_argument("-d", "--dataset", help=DATASET_HELP + "; trains into $nnUNet_results/DatasetXXX_Name/"
                     "<Trainer>__gnnsegPlans__<configuration>/fold_<k>/ (nnU-Net's layout)")
    fit.add_argument("-tr", "--trainer", help="with -d: the trainer name in the model folder's name (default "
                     "gnnsegTrainer, gnnsegTrainer_<network> for U-Mamba)")
    fit.add_argument("--configuration", "-c", default="2d")
    fit.add_argument("--fold", "-f", default="0", help="0..4 or 'all'")
    fit.add_argument("--epochs", type=int, default=1000)
    fit.add_argument("--iterations", type=int, default=250, help="iterations per epoch")
    fit.add_argument("--batch-size", type=int, help="override the plans' batch size")
    fit.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    fit.add_argument("--network", choices=LazyChoices("gnnseg.seg.unet.network", "NETWORKS"), default="unet",
                     metavar="NETWORK", help="unet (the plain U-Net), or U-Mamba with Mamba layers at the bottleneck "
                                             "(umamba_bot) or after every encoder stage (umamba_enc)")
    fit.add_argument("--lr", type=float)
    fit.add_argument("--precision", choices=PRECISION_NAMES, default="float32",
                     help="float32, or bfloat16: forward passes under autocast, about 2x faster on CPUs with "
                          "AVX512-BF16")
    fit.add_argument("--device", help=DEVICE_HELP)
    fit.add_argument("--elastic", type=probability, default=0.0, metavar="P",
                     help="probability of the original U-Net's elastic deformation per patch (EM images: 0.2)")
    fit.add_argument("--intensity-shift", type=probability, default=0.0, metavar="P",
                     help="probability of an additive shift of the normalised intensities (a scan brighter or "
                          "darker than the training set, e.g. contrast-enhanced CT after unenhanced training)")
    fit.add_argument("--label-intensity-shift", type=probability, default=0.0, metavar="P",
                     help="probability of a shift drawn for each labelled structure of a patch on its own (contrast "
                          "agent brightens organs by different amounts)")
    fit.add_argument("--no-mirroring", action="store_true",
                     help="no mirroring augmentation (left and right matter: liver vs spleen)")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--runs-dir", help="without -d: where run folders are made (default runs)")
    fit.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    fit.add_argument("--c", dest="resume", action="store_const", const=True,
                     help="with -d: continue the fold from its checkpoint_latest.pth (nnU-Net's --c)")
    fit.add_argument("--json", action="store_true")
    fit.set_defaults(handler=_seg_train)

    infer = seg.add_parser("predict", help="segment every case of a folder with a trained run or nnU-Net model")
    infer.add_argument("-i", "--input", required=True, help="a folder of cases, or one DICOM series folder")
    infer.add_argument("-o", "--output", required=True,
                       help="a new folder for the cases' labels; a .dcm file: a DICOM-SEG of the DICOM series -i")
    infer.add_argument("-m", "--model", nargs="+", metavar="MODEL_DIR",
                       help="a model folder (<Trainer>__<Plans>__<configuration> with plans.json, dataset.json and "
                            "fold_*/, trained by `gnnseg seg train -d` or by nnU-Net v2), run folders made by "
                            "`gnnseg seg train --runs-dir` (one fold each: give every fold), or a U-Net ONNX export "
                            "(`gnnseg seg export-onnx --unet`: runs without torch)")
    infer.add_argument("-d", "--dataset", help=DATASET_HELP + "; the model is $nnUNet_results/DatasetXXX_Name/"
                       "<Trainer>__<Plans>__<configuration> (with -c, -tr, -p)")
    infer.add_argument("-c", "--configuration", help="with -d: the configuration (2d, 3d_fullres, ...)")
    infer.add_argument("-tr", "--trainer", help="with -d: the trainer (default gnnsegTrainer; nnUNetTrainer for a "
                                                "model trained by nnU-Net)")
    infer.add_argument("-p", "--plans", help="with -d: the plans identifier (default gnnsegPlans; nnUNetPlans for a "
                                             "model trained by nnU-Net)")
    infer.add_argument("--checkpoint", default=None,
                       help=f"checkpoint file name in each fold (default {UNET_CHECKPOINT}, written at the end of "
                            "training; checkpoint_best.pth is the other choice)")
    infer.add_argument("-f", "--folds", nargs="+", default=None, metavar="FOLD",
                       help="the folds of a model folder to ensemble (default: every fold_<k> holding the "
                            "checkpoint; 'all' for fold_all); their logits are averaged")
    infer.add_argument("--step-size", type=float, default=None,
                       help="sliding-window step as a fraction of the patch (default 0.5: windows overlap by half; "
                            "an ONNX export's own step)")
    infer.add_argument("--disable-tta", action="store_true",
                       help="no test-time mirroring (on by default, along the axes the model was trained to mirror)")
    infer.add_argument("--save-probabilities", action="store_true",
                       help="also write <case>.npz (probabilities) and <case>.json (properties) per case")
    infer.add_argument("--keep-largest", type=int_list, default=[], metavar="L1,L2",
                       help="reduce these labels to their largest connected component (for one-piece organs)")
    infer.add_argument("--postprocessing", metavar="FILE",
                       help="apply the post-processing chosen on cross-validation (postprocessing.json made by "
                            "`gnnseg seg find-best-configuration`) to the predicted label maps")
    infer.add_argument("--device", help=DEVICE_HELP)
    infer.add_argument("--precision", choices=PRECISION_NAMES, default="float32",
                       help="bfloat16: convolutions under bfloat16 autocast, about twice as fast on CPUs with AMX or "
                            "AVX512-BF16; labels can change where classes are nearly tied (default float32, as "
                            "nnU-Net predicts)")
    infer.add_argument("--json", action="store_true")
    infer.set_defaults(handler=_seg_predict)

    together = seg.add_parser("ensemble", help="average the probabilities that `seg predict --save-probabilities` "
                                               "kept in two or more folders into label maps (nnUNetv2_ensemble)")
    together.add_argument("-i", "--input", nargs="+", required=True, metavar="FOLDER",
                          help="prediction folders of the same cases (each with --save-probabilities)")
    together.add_argument("-o", "--output", required=True, help="a new folder for the label maps")
    together.add_argument("--postprocessing", metavar="FILE",
                          help="then apply the post-processing find-best-configuration chose for this ensemble")
    together.add_argument("--json", action="store_true")
    together.set_defaults(handler=_seg_ensemble)

    select = seg.add_parser("find-best-configuration",
                            help="nnU-Net's model selection over trained folds: cross-validation Dice of each "
                                 "configuration and of their pairwise ensembles, the best one, and the "
                                 "keep-the-largest-component post-processing that raises its Dice")
    select.add_argument("work_dir", nargs="?", help="the work folder the runs were trained from (its plans.json)")
    select.add_argument("-d", "--dataset", help=DATASET_HELP + "; the folds are those of $nnUNet_results/"
                        "DatasetXXX_Name/<Trainer>__<Plans>__<configuration>/fold_<k> (-tr, -p)")
    select.add_argument("-tr", "--trainer", help="with -d: the trainer (default gnnsegTrainer)")
    select.add_argument("-p", "--plans", help="with -d: the plans identifier (default gnnsegPlans)")
    select.add_argument("-c", "--configurations", nargs="+", metavar="CONFIGURATION",
                        help="configurations to compare (default: every configuration of the plans with runs)")
    select.add_argument("-f", "--folds", nargs="+", type=int, default=[0, 1, 2, 3, 4], metavar="FOLD",
                        help="the folds whose validation predictions are pooled (default 0 1 2 3 4)")
    select.add_argument("--runs-dir",
                        help="without -d: where `seg train` put the runs (default runs; those trained with "
                             "WORK_DIR's plans count)")
    select.add_argument("--run", action="append", metavar="RUN_DIR",
                        help="use exactly these runs (repeat; one per configuration and fold) instead of searching "
                             "--runs-dir")
    select.add_argument("--disable-ensembling", action="store_true",
                        help="compare single configurations only (ensembles need every case's probabilities)")
    select.add_argument("-o", "--output",
                        help="a new folder for the results (default WORK_DIR/model_selection_folds_<folds>; "
                             "with -d in the dataset's folder of nnUNet_results)")
    select.add_argument("--json", action="store_true")
    select.set_defaults(handler=_seg_find_best_configuration)

    score = seg.add_parser("metrics", help="Dice, NSD and HD95 of predictions against ground truth")
    score.add_argument("--pred", required=True)
    score.add_argument("--gt", required=True)
    score.add_argument("--tolerance", type=float, default=2.0, help="NSD tolerance in mm")
    score.add_argument("--json", action="store_true")
    score.set_defaults(handler=_seg_metrics)

    segment = seg.add_parser("segment", help="box-prompted segmentation of a 2D image or a 3D volume (MedSAM)")
    segment.add_argument("--image", help="a PNG / JPEG / TIFF image")
    segment.add_argument("--box", type=box, action="append", help="x0,y0,x1,y1 in pixels (repeatable)")
    segment.add_argument("--point", type=point, action="append",
                         help="x,y,label: a click on the image's object, label 1 inside it and 0 outside (repeatable; "
                              "with at most one --box)")
    segment.add_argument("--prompts", metavar="FILE",
                         help='a JSON file {"objects": [{"box": [...], "points": [[x, y], ...], "labels": [...]}]}')
    segment.add_argument("--volume", help="a NIfTI file or a DICOM series folder")
    segment.add_argument("--box3d", type=box3d, action="append",
                         help="x_min,y_min,z_min,x_max,y_max,z_max in voxel indices of the (Z, Y, X) array")
    segment.add_argument("--npz", help="a CVPR 2024 'MedSAM on Laptop' case (imgs, boxes); writes its segs npz")
    segment.add_argument("--modality", choices=("ct", "mr"), default="ct", help="volume intensity handling")
    segment.add_argument("--window", default="soft_tissue", help="CT window preset (soft_tissue, lung, brain, bone)")
    segment.add_argument("-o", "--output", required=True,
                         help="mask PNG (2D), NIfTI (3D), .dcm (a DICOM-SEG of a DICOM series --volume) or npz "
                              "(--npz); never overwritten")
    _add_model_arguments(segment)
    segment.add_argument("--overlaps", choices=OVERLAP_RULES, default=OVERLAP_RULES[0], help=OVERLAPS_HELP)
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
    tune.add_argument("--click-rounds", type=int, default=0,
                      help="after the box, N rounds of simulated correction clicks per step, every round scored "
                           "(SAM's recipe), so the model learns to take clicks; the prompt encoder then trains too")
    tune.add_argument("--zoom", type=float, metavar="CONTEXT",
                      help="whole-image models (Lite MedSAM): learn on the window around each box that --zoom "
                           "CONTEXT answers it on, at the image's own resolution, so small objects in large images "
                           "are trained as they will be seen")
    tune.add_argument("--device", help=DEVICE_HELP)
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
    distil.add_argument("--device", help=DEVICE_HELP)
    distil.add_argument("--seed", type=int, default=0)
    distil.add_argument("--json", action="store_true")
    distil.set_defaults(handler=_seg_distill)

    export = seg.add_parser("export-onnx", help="write a SAM model as encoder.onnx, decoder.onnx and "
                                                "prompt_decoder.onnx (run with onnxruntime, without torch, by passing "
                                                "the folder as --checkpoint), or with --unet a U-Net (gnnseg run or "
                                                "nnU-Net v2 model) as ONNX graphs with its plans, segmented without "
                                                "torch by the ONNX U-Net predictor")
    _add_model_arguments(export, tta_help=None)
    export.add_argument("--unet", action="append", metavar="MODEL_DIR",
                        help="export a U-Net instead of a SAM model: a model folder in nnU-Net's results layout, "
                             "trained by nnU-Net v2 or by gnnseg (every fold it holds), or gnnseg run folders "
                             "(`seg train`; repeat --unet for the folds of one plan and configuration); one graph per "
                             "fold, their logits averaged at prediction")
    export.add_argument("--unet-checkpoint", metavar="FILE",
                        help=f"with --unet: the checkpoint file in each fold (default {UNET_CHECKPOINT})")
    export.add_argument("--unet-folds", nargs="+", metavar="FOLD",
                        help="with --unet and a model folder: the folds to export (default: every fold_<k> holding "
                             "the checkpoint; 'all' for fold_all)")
    export.add_argument("-o", "--output", required=True, help="a new or empty folder")
    export.add_argument("--json", action="store_true")
    export.set_defaults(handler=_seg_export_onnx)

    export_hf = seg.add_parser("export-hf", help="write a ViT model as a Hugging Face transformers SAM folder "
                                                 "(config.json + model.safetensors) that SamModel.from_pretrained "
                                                 "loads, and that --checkpoint reads back")
    _add_model_arguments(export_hf, tta_help=None)
    export_hf.add_argument("-o", "--output", "--out", required=True, help="a new or empty folder")
    export_hf.add_argument("--json", action="store_true")
    export_hf.set_defaults(handler=_seg_export_hf)

    assess = seg.add_parser("evaluate", help="DSC and NSD of box-prompted segmentation against masks")
    assess.add_argument("--images", required=True)
    assess.add_argument("--masks", required=True)
    assess.add_argument("--allow-unmatched", action="store_true", help=UNMATCHED_HELP)
    assess.add_argument("--box-margin", type=int, default=5, help="pixels added around each ground-truth box")
    assess.add_argument("--tolerance", type=float, default=2.0, help="NSD tolerance in pixels (mm for volumes)")
    assess.add_argument("--modality", choices=("ct", "mr"), default="ct", help="how NIfTI volumes are scaled")
    assess.add_argument("--clicks", type=int, default=0, metavar="N",
                        help="then correct each object with up to N clicks of the CVPR 2025 challenge's simulated "
                             "user (5 as the challenge): adds DSC and NSD per step, their AUC and final values")
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
    run.add_argument("--overlaps", choices=OVERLAP_RULES, default=OVERLAP_RULES[0], help=OVERLAPS_HELP)
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


def add_serve_command(halves: argparse._SubParsersAction) -> None:
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
