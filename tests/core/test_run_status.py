"""How a command's runs end: complete, interrupted by Ctrl+C (one line, resumable), or failed (no empty folder)."""

from __future__ import annotations

import json

import numpy as np

from gnnseg import cli
from gnnseg.core.runs import close_runs, new_run, reopen_run


def _metrics(folder):
    return json.loads(next(folder.glob("demo/*/metrics.json")).read_text())


def test_ctrl_c_ends_in_one_line_and_marks_the_run_interrupted(monkeypatch, tmp_path, capsys):
    def interrupted(args):
        run = new_run("demo", tmp_path)
        run.log_metrics(epoch=3)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_demo", interrupted)
    assert cli.main(["demo"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gnnseg: interrupted;") and "marked interrupted" in err
    assert _metrics(tmp_path) == {"epoch": 3, "status": "interrupted"}


def test_a_failed_run_leaves_no_empty_folder_and_a_finished_one_says_complete(monkeypatch, tmp_path):
    def failing(args):
        new_run("demo", tmp_path).save_config({"lr": 0.1})
        raise ValueError("the data is broken")

    monkeypatch.setattr(cli, "_demo", failing)
    assert cli.main(["demo"]) == 2
    assert not any((tmp_path / "demo").iterdir())

    def finishing(args):
        new_run("demo", tmp_path).log_metrics(accuracy=0.8)
        return {}

    monkeypatch.setattr(cli, "_demo", finishing)
    assert cli.main(["demo"]) == 0
    assert _metrics(tmp_path) == {"accuracy": 0.8, "status": "complete"}


def test_a_resumed_run_adds_to_its_metrics_and_a_second_close_keeps_the_newest(tmp_path):
    run = new_run("demo", tmp_path)
    run.log_metrics(per_seed=[0.7], epochs=3)
    close_runs("interrupted")
    assert _metrics(tmp_path)["status"] == "interrupted"
    resumed = reopen_run(run.path)
    assert resumed.metrics == {"per_seed": [0.7], "epochs": 3}
    assert _metrics(tmp_path) == {"per_seed": [0.7], "epochs": 3}      # running again: no longer "interrupted"
    resumed.log_metrics(per_seed=[0.7, 0.8])
    assert _metrics(tmp_path) == {"per_seed": [0.7, 0.8], "epochs": 3}
    close_runs("complete")
    assert _metrics(tmp_path) == {"per_seed": [0.7, 0.8], "epochs": 3, "status": "complete"}


def test_an_interrupted_lite_prediction_resumes_where_it_stopped(tmp_path, capsys):
    cases, output = tmp_path / "cases", tmp_path / "segs"
    cases.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        np.savez(cases / f"2DBox_{k}.npz", imgs=rng.integers(0, 255, (40, 48, 3), dtype=np.uint8),
                 boxes=np.array([[5, 5, 30, 30]]))
    arguments = ["seg", "lite", "predict", "--input", str(cases), "--output", str(output),
                 "--checkpoint", "lite_medsam_fast", "--json"]
    assert cli.main(arguments) == 0
    kept = (output / "2DBox_1.npz").read_bytes()
    (output / "2DBox_0.npz").unlink()                     # as if Ctrl+C came before the first case was written
    capsys.readouterr()
    assert cli.main(arguments) == 2 and "--resume" in capsys.readouterr().err
    assert cli.main([*arguments, "--resume"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["cases"] == 1 and answer["kept"] == 2
    assert (output / "2DBox_0.npz").is_file() and (output / "2DBox_1.npz").read_bytes() == kept
