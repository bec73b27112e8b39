"""Run directories: ``runs/<task>/<timestamp>/`` holding ``config.json``, ``metrics.json`` and plots.

A run never overwrites an earlier one: the directory name carries the time down to microseconds and
is created with ``exist_ok=False``. A command's runs end with their ``status`` in ``metrics.json``: ``complete``,
``interrupted`` (Ctrl+C: continue it with the command's ``--resume`` where it has one) or ``failed``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # plots are files, never windows
import torch  # noqa: E402

from gnnseg.core.atomic import atomic_path  # noqa: E402
from gnnseg.core.cpu_info import cpu_model_and_flags  # noqa: E402
from gnnseg.core.jsonable import jsonable  # noqa: E402


def machine_info() -> dict[str, Any]:
    """What a benchmark or run needs to say about where it ran."""
    return {
        "platform": platform.platform(),
        "processor": cpu_model_and_flags()[0],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": datetime.now().isoformat(timespec="seconds"),
    }


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write ``payload`` as indented JSON atomically (temp file, then rename)."""
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(jsonable(payload), indent=2, sort_keys=True) + "\n")
    return path


@dataclass
class RunDirectory:
    """One run's output folder. Create it with :func:`new_run`."""

    path: Path
    metrics: dict[str, Any] = field(default_factory=dict)

    def save_config(self, config: dict[str, Any]) -> Path:
        return write_json(self.path / "config.json", {**config, "machine": machine_info()})

    def log_metrics(self, **values: Any) -> Path:
        """Merge ``values`` into ``metrics.json`` (rewritten each call, so it is current after a crash)."""
        self.metrics.update(values)
        return write_json(self.path / "metrics.json", self.metrics)

    def figure_path(self, name: str) -> Path:
        return self.path / (name if name.endswith(".png") else f"{name}.png")


_OPEN_RUNS: list[RunDirectory] = []
"""Runs created in this process and not yet closed by :func:`close_runs` (the command line closes them)."""


def new_run(task: str, root: str | os.PathLike = "runs") -> RunDirectory:
    """Create ``<root>/<task>/<timestamp>/`` and return it; never reuses an existing folder."""
    if not task or any(sep in task for sep in ("/", "\\", "..")):
        raise ValueError(f"task name must be a plain folder name, got {task!r}")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    path = Path(root) / task / stamp
    path.mkdir(parents=True, exist_ok=False)
    run = RunDirectory(path)
    _OPEN_RUNS.append(run)
    return run


def close_runs(status: str) -> list[Path]:
    """Record how this process's open runs ended (``status`` in ``metrics.json``: ``complete``, ``interrupted`` or
    ``failed``) and return their folders; a failed run that wrote nothing beyond its configuration is removed,
    so no empty run folder looks like a result."""
    closed = []
    while _OPEN_RUNS:
        run = _OPEN_RUNS.pop()
        if not run.path.is_dir():
            continue
        if status == "failed" and {item.name for item in run.path.iterdir()} <= {"config.json"}:
            shutil.rmtree(run.path, ignore_errors=True)
            continue
        metrics_path = run.path / "metrics.json"
        written = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        write_json(metrics_path, {**written, **run.metrics, "status": status})
        closed.append(run.path)
    return closed


def reopen_run(path: str | os.PathLike) -> RunDirectory:
    """An existing run folder, continued by ``--resume``: its ``metrics.json`` is read back, so what the run logs
    next adds to it, and its ``status`` is dropped there at once: while it runs again it has none, as a new run, until
    it is closed like one when the command ends."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"cannot resume: the run folder {path} does not exist")
    run = RunDirectory(path)
    metrics_path = path / "metrics.json"
    if metrics_path.is_file():
        run.metrics = json.loads(metrics_path.read_text())
        run.metrics.pop("status", None)
        write_json(metrics_path, run.metrics)
    _OPEN_RUNS.append(run)
    return run
