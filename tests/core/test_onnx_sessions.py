"""The cache of optimised onnxruntime graphs: reused only for the same graph file, never an error, same outputs;
entries of graph files that are gone are removed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

from gnnseg.core import onnx_sessions  # noqa: E402
from gnnseg.core.onnx_sessions import open_session, open_session_uncached  # noqa: E402


def write_conv_graph(path, seed: int = 0) -> None:
    """Two 3x3 convolutions with a ReLU between: onnxruntime turns them into its NCHWc form on x86."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = [numpy_helper.from_array(rng.normal(size=(16, c, 3, 3)).astype(np.float32), f"w{k}")
               for k, c in enumerate((3, 16))]
    nodes = [helper.make_node("Conv", ["image", "w0"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w1"], ["logits"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                             [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 16, 32, 32])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(onnx_sessions.CACHE_ENV, str(folder))
    monkeypatch.delenv(onnx_sessions.SWITCH_ENV, raising=False)
    return folder / "onnxruntime"


@pytest.fixture
def opened(monkeypatch):
    """The files onnxruntime is asked to open, in order."""
    paths = []
    real = onnxruntime.InferenceSession

    def recording(path, *args, **kwargs):
        paths.append(os.path.basename(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", recording)
    return paths


def run(session) -> np.ndarray:
    image = np.random.default_rng(1).normal(size=(1, 3, 32, 32)).astype(np.float32)
    return session.run(None, {"image": image})[0]


def entries(cache) -> list[str]:
    return sorted(p.name for p in cache.glob("*.onnx")) if cache.is_dir() else []


def notes(cache) -> dict[str, str]:
    """Entry name -> the graph file its note names."""
    return ({p.with_suffix(".onnx").name: os.fsdecode(p.read_bytes()) for p in cache.glob("*.source")}
            if cache.is_dir() else {})


def unused_for(cache, days: float) -> None:
    """Every entry last used ``days`` ago."""
    then = time.time() - days * 24 * 3600
    for note in cache.glob("*.source"):
        os.utime(note, (then, then))


def test_the_optimised_graph_is_written_once_and_opened_again_with_the_same_outputs(tmp_path, cache, opened):
    graph = tmp_path / "convs.onnx"
    write_conv_graph(graph)
    expected = run(open_session_uncached(graph))
    first = run(open_session(graph, threads=1))
    assert len(entries(cache)) == 1 and entries(cache)[0].startswith("convs-")
    second = run(open_session(graph, threads=1))
    assert opened == ["convs.onnx", "convs.onnx", entries(cache)[0]]
    np.testing.assert_allclose(first, expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(second, first)


def test_a_rewritten_graph_gets_a_new_entry_in_place_of_the_old(tmp_path, cache):
    """Rewritten with the same size and its old modification time put back (as ``cp -p`` or an unpacked archive
    would): the change time still differs, so the old optimised graph is never served for the new one."""
    graph = tmp_path / "convs.onnx"
    write_conv_graph(graph, seed=0)
    stamps = graph.stat().st_atime_ns, graph.stat().st_mtime_ns
    open_session(graph)
    first = entries(cache)
    write_conv_graph(graph, seed=1)
    os.utime(graph, ns=stamps)
    np.testing.assert_allclose(run(open_session(graph)), run(open_session_uncached(graph)), atol=1e-5)
    assert len(entries(cache)) == 1 and entries(cache) != first    # one entry per graph file
    other = tmp_path / "other.onnx"
    write_conv_graph(other, seed=2)
    open_session(other)
    assert len(entries(cache)) == 2                                # another file keeps its own


def test_entries_of_graphs_that_are_gone_and_unused_for_a_week_are_removed_when_another_is_written(tmp_path, cache):
    kept, deleted, newer, newest = (tmp_path / f"{name}.onnx" for name in ("kept", "deleted", "newer", "newest"))
    for seed, graph in enumerate((kept, deleted, newer, newest)):
        write_conv_graph(graph, seed=seed)
    open_session(kept)
    open_session(deleted)
    assert sorted(notes(cache).values()) == sorted([str(deleted.resolve()), str(kept.resolve())])
    assert sorted(notes(cache)) == entries(cache)
    deleted.unlink()
    open_session(newer)                       # used this week: kept, as another machine sharing the cache may use it
    assert len(entries(cache)) == 3
    unused_for(cache, 8)
    open_session(kept)                        # served from the cache, which marks it used
    (kept_note,) = cache.glob("kept-*.source")
    assert time.time() - kept_note.stat().st_mtime < 3600
    open_session(newest)
    assert [name.split("-")[0] for name in entries(cache)] == ["kept", "newer", "newest"]
    assert sorted(notes(cache)) == entries(cache)


def test_an_entry_without_a_note_gets_one_when_used(tmp_path, cache):
    graph = tmp_path / "convs.onnx"
    write_conv_graph(graph)
    open_session(graph)
    (note,) = cache.glob("*.source")
    note.unlink()                                            # as entries made before entries had notes
    open_session(graph)
    assert notes(cache) == {entries(cache)[0]: str(graph.resolve())}


def test_a_note_whose_graph_cannot_be_checked_stays(tmp_path, cache, monkeypatch):
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    inside = hidden / "inside.onnx"
    write_conv_graph(inside, seed=1)
    open_session(inside)
    inside.unlink()
    real_exists = Path.exists

    def unsearchable(self, *args, **kwargs):   # as a folder without search permission answers (root ignores chmod)
        if self.parent == hidden.resolve():
            raise PermissionError(13, "Permission denied", str(self))
        return real_exists(self, *args, **kwargs)

    monkeypatch.setattr(Path, "exists", unsearchable)
    unused_for(cache, 8)
    other = tmp_path / "other.onnx"
    write_conv_graph(other, seed=2)
    open_session(other)
    assert [name.split("-")[0] for name in entries(cache)] == ["inside", "other"]


def test_a_file_name_that_is_not_utf8_is_refused_by_name(tmp_path, cache):
    odd = tmp_path / os.fsdecode(b"caf\xe9.onnx")           # Linux allows it; Python holds it with surrogates
    write_conv_graph(odd)
    for opening in (open_session, open_session_uncached):
        with pytest.raises(ValueError, match="cannot be opened by onnxruntime, which takes only file names that are"):
            opening(odd)
    assert entries(cache) == []


def test_a_damaged_entry_is_replaced_not_an_error(tmp_path, cache):
    graph = tmp_path / "convs.onnx"
    write_conv_graph(graph)
    open_session(graph)
    entry = cache / entries(cache)[0]
    entry.write_bytes(b"not a graph")
    np.testing.assert_allclose(run(open_session(graph)), run(open_session_uncached(graph)), atol=1e-5)
    assert entries(cache) == [entry.name] and entry.stat().st_size > 1000


def test_the_cache_can_be_turned_off_and_an_unwritable_one_is_skipped(tmp_path, cache, monkeypatch):
    graph = tmp_path / "convs.onnx"
    write_conv_graph(graph)
    monkeypatch.setenv(onnx_sessions.SWITCH_ENV, "0")
    run(open_session(graph))
    assert not cache.exists()
    monkeypatch.delenv(onnx_sessions.SWITCH_ENV)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv(onnx_sessions.CACHE_ENV, str(blocker))
    assert run(open_session(graph)).shape == (1, 16, 32, 32)


def test_a_read_only_cache_is_not_written_to(tmp_path, cache, opened, monkeypatch):
    """An existing cache folder the user cannot write (as the access check reports it; root could write anyway):
    the graph is optimised once in memory, not once for a failed save and again without it, and nothing is left."""
    graph = tmp_path / "convs.onnx"
    write_conv_graph(graph)
    cache.mkdir(parents=True)
    monkeypatch.setattr(onnx_sessions.os, "access", lambda path, mode: False)
    assert run(open_session(graph)).shape == (1, 16, 32, 32)
    assert opened == ["convs.onnx"] and list(cache.iterdir()) == []
