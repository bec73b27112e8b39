"""What both halves of gnnseg share: seeding, run directories, progress bars, checkpoints."""

from gnnseg.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gnnseg.core.progress import progress
from gnnseg.core.runs import RunDirectory, machine_info, new_run, write_json
from gnnseg.core.seed import seed_everything

__all__ = [
    "CheckpointError", "RunDirectory", "load_checkpoint", "machine_info", "new_run", "progress",
    "save_checkpoint", "seed_everything", "write_json",
]
