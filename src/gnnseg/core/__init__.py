"""What both halves of gnnseg share: seeding, run directories, progress bars, checkpoints.

Names are loaded on first use, so that a torch-free path (``gnnseg.core.atomic``, ``gnnseg.core.jsonable``) does not
import torch through this package.
"""

from importlib import import_module

# imported now (it is light): the function shares its module's name, which would shadow it once the module loads
from gnnseg.core.progress import progress

_HOMES = {
    "CheckpointError": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "RunDirectory": "runs", "machine_info": "runs", "new_run": "runs",
    "write_json": "runs", "seed_everything": "seed",
}

__all__ = ["CheckpointError", "RunDirectory", "load_checkpoint", "machine_info", "new_run", "progress",
           "save_checkpoint", "seed_everything", "write_json"]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'gnnseg.core' has no attribute {name!r}")
    return getattr(import_module(f"gnnseg.core.{_HOMES[name]}"), name)
