"""docs/benchmarks.md and the README's headline table are current: rendered now from their templates and
benchmarks/results/*.json, they are what is committed; and what cannot be rendered is named (template line, results
file, path), never left blank."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _renderer():
    """benchmarks/render_results_page.py as a module (benchmarks/ is a folder of scripts, not a package)."""
    name = "render_results_page"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "render_results_page.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_committed_page_equals_the_page_rendered_from_the_results():
    renderer = _renderer()
    rendered = renderer.render_page()
    committed = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert committed == rendered, (
        "docs/benchmarks.md differs from what docs/benchmarks.template.md and benchmarks/results/*.json give: "
        "run `make docs` (python benchmarks/render_results_page.py --check shows the difference)"
    )


def test_readme_headline_table_equals_the_table_rendered_from_the_results():
    renderer = _renderer()
    committed = (ROOT / "README.md").read_text(encoding="utf-8")
    assert renderer.render_readme(committed) == committed, (
        "README.md's headline table differs from what docs/readme_headlines.template.md and benchmarks/results/*.json "
        "give: run `make docs`"
    )


def test_a_readme_without_the_headline_markers_is_refused_by_name():
    renderer = _renderer()
    with pytest.raises(renderer.RenderError, match="headline table"):
        renderer.render_readme("# gnnseg\n\n| what | measured |\n")


@pytest.fixture
def results(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"rows": [{"model": "gcn", "dsc": 0.9134, "nsd": None}]}))
    return _renderer().Results(tmp_path)


def test_placeholders_read_values_selections_and_differences(results):
    template = ("DSC {{ run.json: rows[model=gcn].dsc | .3f }}, {{ run.json: rows[0].dsc | percent .1f }} %, "
                "{{ run.json: rows[0].dsc - run.json: rows[0].dsc | percent +.1f }} points")
    page = _renderer().render(template, results, "page.template.md")
    assert page.endswith("DSC 0.913, 91.3 %, +0.0 points\n")


@pytest.mark.parametrize(("placeholder", "named"), [
    ("{{ run.json: rows[0].hd95 | .3f }}", ["run.json: rows[0] has no key 'hd95'", "its keys: model, dsc, nsd"]),
    ("{{ gone.json: rows[0].dsc | .3f }}", ["gone.json does not exist"]),
    ("{{ run.json: rows[3].dsc | .3f }}", ["run.json: rows is a list of 1 items; there is no item [3]"]),
    ("{{ run.json: rows[model=gat].dsc | .3f }}", ["run.json: rows[model=gat] matches 0 items"]),
    ("{{ run.json: rows[0].nsd | .3f }}", ["run.json: rows[0].nsd: the value is null, not a number"]),
])
def test_what_cannot_be_rendered_is_named_with_template_line_and_json_path(results, placeholder, named):
    template = f"# Results\n\nDice {{{{ run.json: rows[0].dsc | .3f }}}}.\nThe other one: {placeholder}.\n"
    with pytest.raises(_renderer().RenderError) as error:
        _renderer().render(template, results, "page.template.md")
    message = str(error.value)
    assert message.startswith("page.template.md:4: "), message
    for part in named:
        assert part in message, message


def test_a_missing_key_in_a_table_names_the_table_line_and_the_json_path(tmp_path):
    (tmp_path / "umamba_scan_speed.json").write_text(json.dumps({"rows": [{"length": 1024, "speedup": 5.6}]}))
    renderer = _renderer()
    with pytest.raises(renderer.RenderError, match=r"^t\.md:3: table umamba_scan_speed: umamba_scan_speed\.json: "
                                                   r"rows\[0\] has no key 'parallel'"):
        renderer.render("Scan:\n\n{{ table: umamba_scan_speed }}\n", renderer.Results(tmp_path), "t.md")
