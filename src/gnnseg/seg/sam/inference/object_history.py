"""What every click session keeps: its objects by id, each with the states it went through, so a click can be undone.

:class:`~gnnseg.seg.sam.inference.session.InteractiveSession` (2D) and
:class:`~gnnseg.seg.sam.inference.volume_session.VolumeSession` (3D) differ in how they answer a box or a click; this
is the part they share: ids, the current state, the history, undo within a depth, removal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

State = TypeVar("State")


@dataclass
class _History(Generic[State]):
    states: list[State] = field(default_factory=list)
    forgotten: int = 0   # states dropped beyond the undo depth


class ObjectHistories(Generic[State]):
    """Objects by id, each with its states oldest first (the last is where it stands). ``undo_depth`` bounds the
    states an object keeps: at most that many clicks can be taken back (``None``: every click)."""

    def __init__(self, undo_depth: int | None) -> None:
        if undo_depth is not None and undo_depth < 0:
            raise ValueError(f"undo_depth must be >= 0 or None, got {undo_depth}")
        self.undo_depth = undo_depth
        self._histories: dict[int, _History[State]] = {}
        self._next_id = 1

    def undo(self, object_id: int) -> State:
        """Take back the object's last click; the state it returns to."""
        history = self._history(object_id)
        if len(history.states) == 1:
            raise ValueError(f"object {object_id} has no click to undo" if not history.forgotten else
                             f"object {object_id} keeps no earlier state (the last {self.undo_depth} clicks can be "
                             "undone)")
        history.states.pop()
        return history.states[-1]

    def state(self, object_id: int) -> State:
        return self._history(object_id).states[-1]

    def history(self, object_id: int) -> list[State]:
        """The states the object keeps, oldest first (the last is its current state)."""
        return list(self._history(object_id).states)

    def remove(self, object_id: int) -> None:
        self._history(object_id)
        del self._histories[object_id]

    @property
    def object_ids(self) -> list[int]:
        return list(self._histories)

    def _new_object(self, first: State) -> int:
        object_id, self._next_id = self._next_id, self._next_id + 1
        self._histories[object_id] = _History([first])
        return object_id

    def _push(self, object_id: int, state: State) -> None:
        """``state`` becomes the object's current one; the oldest goes once more than ``undo_depth`` clicks are kept."""
        history = self._history(object_id)
        history.states.append(state)
        if self.undo_depth is not None and len(history.states) > self.undo_depth + 1:
            del history.states[0]
            history.forgotten += 1

    def _history(self, object_id: int) -> _History[State]:
        if object_id not in self._histories:
            known = ", ".join(map(str, self._histories)) or "none"
            raise KeyError(f"no object {object_id} in this session (objects: {known})")
        return self._histories[object_id]
