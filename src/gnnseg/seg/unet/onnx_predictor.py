"""A U-Net export (:mod:`gnnseg.seg.unet.onnx_export`) segmenting cases with numpy, scipy and onnxruntime: no torch.

The steps are the PyTorch predictor's (:mod:`gnnseg.seg.unet.predict`), on the same arrays: the case is preprocessed
as its plans say, segmented by Gaussian-weighted sliding windows with optional mirroring
(:mod:`~gnnseg.seg.unet.sliding_window`; the 2D configuration slice by slice), and its logits mapped back onto the
case's own grid (spacing and affine); what happens before and after the windows is the plans format's
(:mod:`~gnnseg.seg.unet.case_recipes`: gnnseg's plans or an nnU-Net v2 model's). Volumes stored in other axis
directions than the network expects are turned for it and back, as the pipeline does. An export of several folds
averages their logits (nnU-Net v2's ensembling), summed in fold order. The networks run in float32; the logits are
summed in place, in the recipe's accumulation type (float16 for nnU-Net models, as nnU-Net sums them).

Two folds run side by side, each on half of the threads, rather than one after the other on all of them. On
2 cores one forward of each of two folds of a random-weight nnU-Net took 0.83x the time that way (ISBI's 2D model,
512 x 512) and 0.96x (the CT 3d_fullres model, 32 x 112 x 128), fastest of 3 (``benchmarks/results/nnunet_dropin.md``);
a tiny model's millisecond forwards gain nothing. PyTorch's forwards gain nothing either (two CT folds in two threads
of one thread each: 1.05-1.17x, *measured once*), so only this predictor does it.
"""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from gnnseg.core.onnx_sessions import default_threads, open_session
from gnnseg.core.progress import progress
from gnnseg.seg.io import MedicalImage, axis_codes, read_any, reorient, reorient_like
from gnnseg.seg.io.any_format import write_any
from gnnseg.seg.unet.case_inputs import fresh_outputs, inputs_by_case
from gnnseg.seg.unet.case_recipes import cases_for
from gnnseg.seg.unet.postprocess import PostprocessingRule, keep_largest_component
from gnnseg.seg.unet.sliding_window import sliding_window_logits

EXPORT_FORMAT = "gnnseg.unet-onnx/1"
INFERENCE_FILE = "inference.json"
PLANS_FILE = "plans.json"
DATASET_FILE = "dataset.json"
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
FOLDS_SIDE_BY_SIDE = 2
"""The most folds run at once: each holds a whole case's logits while it runs, so every fold more costs that much
memory again (nnunetv2 holds two such arrays: the running sum and the fold it adds)."""
_REQUIRED_SETTINGS = ("format", "plans_format", "configuration", "patch_size", "input_channels", "num_classes",
                      "graphs", "mirror_axes", "step_size", "file_ending")


def in_order(work: Callable[[int], np.ndarray], items: Iterable[int], at_once: int, *,
             stop: threading.Event | None = None) -> Iterator[np.ndarray]:
    """``work(item)`` for each item, yielded in the items' order; up to ``at_once`` items are worked on side by side
    in threads (onnxruntime releases the GIL while it runs), and no more are started than are being waited for.

    When an item fails, or the caller stops early or is interrupted, ``stop`` is set before the items still being
    worked on are waited for, so that work which checks it ends at its next step instead of finishing."""
    if at_once == 1:
        yield from map(work, items)
        return
    pool = ThreadPoolExecutor(at_once)
    try:
        pending = deque()
        for item in items:
            pending.append(pool.submit(work, item))
            if len(pending) == at_once:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BaseException:
        if stop is not None:
            stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def is_unet_onnx_export(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a U-Net ONNX export (its ``inference.json`` says so); reads one small file."""
    settings = Path(folder) / INFERENCE_FILE
    if not settings.is_file():
        return False
    try:
        return json.loads(settings.read_text()).get("format") == EXPORT_FORMAT
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        return False


def _read_settings(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise FileNotFoundError(f"U-Net export folder not found: {folder}")
    path = folder / INFERENCE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a U-Net ONNX export: it has no {INFERENCE_FILE} (write one with "
                                "`gnnseg seg export-onnx --unet MODEL_DIR -o FOLDER`)")
    try:
        settings = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a JSON file ({error})") from None
    if not isinstance(settings, dict) or settings.get("format") != EXPORT_FORMAT:
        found = settings.get("format") if isinstance(settings, dict) else type(settings).__name__
        raise ValueError(f"{path} is not a gnnseg U-Net export (format {found!r}, expected {EXPORT_FORMAT!r})")
    missing = [key for key in _REQUIRED_SETTINGS if key not in settings]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(map(repr, missing))}; export the model again")
    return settings


class OnnxUNet:
    """An export folder opened: its plans (as a :class:`~gnnseg.seg.unet.case_recipes.CaseRecipe`), settings and one
    onnxruntime session per fold (CPU).

    ``threads``: the CPU threads the model runs on (default: one per physical core). With two threads or more, two
    folds run side by side (:data:`FOLDS_SIDE_BY_SIDE`), each session on half of them (rounded down), which keeps one
    fold's logits more in memory.
    ``half_precision``: for an nnU-Net model, whether the window sums are float16 as nnU-Net's (default) or float32
    (:class:`~gnnseg.seg.unet.case_recipes.NnUNetCases`); a gnnseg model's are float32.
    """

    def __init__(self, folder: str | os.PathLike, *, threads: int | None = None,
                 half_precision: bool | None = None) -> None:
        folder = Path(folder)
        settings = _read_settings(folder)
        needed = (PLANS_FILE, DATASET_FILE, *settings["graphs"])
        missing = [name for name in needed if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"the U-Net export {folder} is incomplete: {', '.join(missing)} missing; export "
                                    "the model again")
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise ImportError("running an ONNX export needs onnxruntime: pip install 'gnnseg[onnx]'") from exc
        self.folder = folder
        self.settings = settings
        self.cases = cases_for(folder, settings, PLANS_FILE, DATASET_FILE, half_precision=half_precision)
        self.configuration: str = settings["configuration"]
        self.allowed_mirror_axes = tuple(int(a) for a in settings["mirror_axes"])
        self.step_size = float(settings["step_size"])
        recorded = (tuple(settings["patch_size"]), int(settings["input_channels"]), int(settings["num_classes"]))
        planned = (self.cases.patch_size, self.cases.channels, self.cases.num_outputs)
        if recorded != planned:
            raise ValueError(f"{folder / INFERENCE_FILE} and the plans beside it disagree on (patch size, channels, "
                             f"outputs): {recorded} vs {planned}; export the model again")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        graphs = settings["graphs"]
        threads = default_threads() if threads is None else threads
        self.side_by_side = min(threads, len(graphs), FOLDS_SIDE_BY_SIDE)
        # side by side, idle threads sleep: the other folds' sessions need the CPUs
        self.sessions = [self._open(folder / name, threads // self.side_by_side, spinning=self.side_by_side == 1)
                         for name in graphs]

    def _open(self, path: Path, threads: int, spinning: bool):
        session = open_session(path, threads=threads, spinning=spinning)
        given = [(graph_input.name, graph_input.shape) for graph_input in session.get_inputs()]
        expected = [self.cases.channels, *self.cases.patch_size]
        if len(given) != 1 or given[0][0] != INPUT_NAME or list(given[0][1][1:]) != expected:
            raise ValueError(f"{path} takes {given}, not one {INPUT_NAME!r} of shape "
                             f"[batch, {', '.join(map(str, expected))}] as {INFERENCE_FILE} says")
        return session

    @property
    def patch_size(self) -> tuple[int, ...]:
        return self.cases.patch_size

    def window_logits(self, fold: int, batch: np.ndarray) -> np.ndarray:
        """Patches ``(B, C, *patch)`` -> one fold's logits ``(B, K, *patch)`` float32."""
        return self.sessions[fold].run([OUTPUT_NAME], {INPUT_NAME: batch})[0]

    def mirror_axes(self, mirror: bool) -> tuple[int, ...]:
        """The axes mirrored at test time: those the model was trained to be mirrored on, or none."""
        return self.allowed_mirror_axes if mirror else ()

    def logits(self, data: np.ndarray, *, mirror: bool = True, step: float | None = None) -> np.ndarray:
        """Logits ``(K, z, y, x)`` of a preprocessed case ``data (C, z, y, x)``, the mean over the folds (nnU-Net v2
        averages logits), each fold's by 3D windows or 2D windows slice by slice; in the recipe's
        ``accumulation_dtype``."""
        cases = self.cases
        dtype = cases.accumulation_dtype
        options = dict(step=self.step_size if step is None else step, mirror_axes=self.mirror_axes(mirror),
                       importance=cases.importance, centered_padding=cases.centered_padding,
                       accumulation_dtype=dtype)

        stop = threading.Event()   # set when a fold fails or the prediction is interrupted: the others end too

        def fold_logits(fold: int) -> np.ndarray:
            def network(batch: np.ndarray) -> np.ndarray:
                if stop.is_set():
                    raise CancelledError("the prediction was stopped")
                return self.window_logits(fold, batch)

            if len(cases.patch_size) == 3:
                return sliding_window_logits(network, data, cases.patch_size, cases.num_outputs, **options)
            logits = np.empty((cases.num_outputs, *data.shape[1:]), dtype)
            for z in range(data.shape[1]):
                logits[:, z] = sliding_window_logits(network, data[:, z], cases.patch_size, cases.num_outputs,
                                                     **options)
            return logits

        total = None
        for logits in in_order(fold_logits, range(len(self.sessions)), self.side_by_side, stop=stop):
            total = logits if total is None else np.add(total, logits, out=total)
            del logits   # added: not held while the next fold runs
        return total if len(self.sessions) == 1 else total / np.asarray(len(self.sessions), dtype)

    def predict_case(self, data: np.ndarray, spacing: Sequence[float], *, mirror: bool = True,
                     step: float | None = None, with_probabilities: bool = False
                     ) -> tuple[np.ndarray, np.ndarray | None]:
        """Segment one case ``data (C, *spatial)`` with ``spacing`` in its own axis order (2D or 3D).

        Returns ``(labels (*spatial) int16, probabilities (K, *spatial) float32 or None)`` on the input grid, as
        :func:`gnnseg.seg.unet.predict.predict_case` does; the probabilities only ``with_probabilities``.
        """
        preprocessed, geometry = self.cases.preprocess(np.asarray(data), spacing)
        logits = np.ascontiguousarray(self.logits(preprocessed, mirror=mirror, step=step))
        del preprocessed
        return self.cases.outputs(logits, geometry, with_probabilities)

    def predict_image(self, channels: Sequence[MedicalImage], *, mirror: bool = True,
                      step: float | None = None) -> MedicalImage:
        """Labels for one case given as one image per channel, on the first channel's grid (uint8, or uint16 for
        label values above 255). A volume whose axes run otherwise than the network expects (gnnseg's
        ``plans.axis_codes``; nnU-Net models keep the stored order) is segmented in that order and its labels put
        back, as :func:`gnnseg.seg.unet.pipeline.predict_image` does."""
        reference = channels[0]
        grids = {tuple(channel.array.shape[:len(channel.spacing)]) for channel in channels}
        if len(grids) > 1:
            raise ValueError(f"the channels of a case must share one grid, got shapes {sorted(grids)}")
        codes = self.cases.axis_codes
        turn = (codes is not None and reference.affine is not None and len(reference.spacing) == 3
                and "".join(axis_codes(reference)) != codes)
        if turn:
            channels = [reorient(channel, tuple(codes)) for channel in channels]
        # a colour image is as many channels as it has colours (nnU-Net's 2D reader)
        data = np.stack([array.astype(np.float32) for channel in channels for array in channel.channels()])
        labels, _ = self.predict_case(data, channels[0].spacing, mirror=mirror, step=step)
        dtype = np.uint8 if max(self.cases.label_values) < 256 else np.uint16
        result = MedicalImage(labels.astype(dtype), channels[0].spacing, channels[0].affine)
        return reorient_like(result, reference) if turn else result


def predict_onnx_folder(export_dir: str | os.PathLike, input_dir: str | os.PathLike, output_dir: str | os.PathLike,
                        *, mirror: bool = True, step_size: float | None = None,
                        keep_largest: Sequence[int] = (), postprocessing: PostprocessingRule | None = None,
                        threads: int | None = None, half_precision: bool | None = None,
                        show_progress: bool | None = None) -> dict[str, Any]:
    """Segment every case in ``input_dir`` (nnU-Net naming, the export's file ending) into ``output_dir`` with the
    U-Net export in ``export_dir``, never overwriting a prediction; without torch.

    ``mirror`` averages the views mirrored along the axes the model was trained to be mirrored on (default, as
    nnU-Net and :func:`gnnseg.seg.unet.pipeline.predict_folder` predict); ``step_size``
    (default: the export's, 0.5) is the window step as a fraction of the patch; each label in ``keep_largest`` is
    reduced to its largest connected component; ``postprocessing`` (chosen by cross-validation) reduces each case's
    labels before they are written; ``threads`` and ``half_precision`` go to :class:`OnnxUNet`. A bar on stderr
    counts the cases.
    """
    if step_size is not None and not 0 < step_size <= 1:
        raise ValueError(f"step_size must be in (0, 1], got {step_size}")
    model = OnnxUNet(export_dir, threads=threads, half_precision=half_precision)
    foreground = [value for value in model.cases.label_values if value > 0]
    unknown = sorted(set(keep_largest) - set(foreground))
    if unknown:
        raise ValueError(f"keep-largest labels {unknown} are not foreground labels of this model ({foreground})")
    if postprocessing is not None:
        postprocessing.check_labels(foreground, str(export_dir))
    ending = model.cases.file_ending
    cases = inputs_by_case(Path(input_dir), ending, model.cases.files_per_case)
    if not cases:
        raise FileNotFoundError(f"no input files ending in {ending} in {input_dir}")
    output = Path(output_dir)
    outputs = fresh_outputs(output, cases, ending)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for case_id, paths in progress(cases.items(), desc="segment (onnx)", total=len(cases), enabled=show_progress):
        image = model.predict_image([read_any(p) for p in paths], mirror=mirror, step=step_size)
        if keep_largest:
            image = MedicalImage(keep_largest_component(image.array, keep_largest), image.spacing, image.affine)
        if postprocessing is not None:
            image = MedicalImage(postprocessing.apply(image.array), image.spacing, image.affine)
        written.append(str(write_any(image, outputs[case_id][0])))
    return {"export_dir": str(export_dir), "configuration": model.configuration, "folds": len(model.sessions),
            "predictions": written, "mirror_axes": list(model.mirror_axes(mirror)),
            "step_size": model.step_size if step_size is None else step_size, "keep_largest": list(keep_largest),
            "postprocessing": None if postprocessing is None else postprocessing.to_json()}
