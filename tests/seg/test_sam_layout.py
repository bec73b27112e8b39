"""The rooms of gnnseg.seg.sam, checked by reading imports: the model never reaches up into inference or training,
and inference imports torch only in the PyTorch predictor, so an ONNX export segments without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import gnnseg.seg.sam as sam_package

SAM = Path(sam_package.__file__).parent
TORCH_PREDICTOR = "predictor.py"


def imported_modules(path: Path) -> list[str]:
    """Every module ``path`` imports, at the top or inside a function, except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    typing_only = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(child) for statement in node.body for child in ast.walk(statement))
    names = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def room(name: str) -> list[Path]:
    files = sorted((SAM / name).glob("*.py"))
    assert files, f"no modules in gnnseg/seg/sam/{name}"
    return files


def test_modeling_never_imports_inference_or_training():
    offending = {path.name: name for path in room("modeling") for name in imported_modules(path)
                 if name.startswith(("gnnseg.seg.sam.inference", "gnnseg.seg.sam.training"))}
    assert not offending, f"modeling imports upwards: {offending}"


def test_only_the_pytorch_predictor_imports_torch_in_inference():
    offending = {path.name: name for path in room("inference") if path.name != TORCH_PREDICTOR
                 for name in imported_modules(path) if name == "torch" or name.startswith("torch.")}
    assert not offending, f"inference modules import torch: {offending}"
    assert "torch" in imported_modules(SAM / "inference" / TORCH_PREDICTOR)


def test_importing_inference_without_the_pytorch_predictor_leaves_torch_unloaded():
    modules = [f"gnnseg.seg.sam.inference.{path.stem}" for path in room("inference")
               if path.name not in (TORCH_PREDICTOR, "__init__.py")]
    script = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules) + \
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))[:3])"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", f"importing {modules} loaded {result.stdout.strip()}"


def test_the_checker_sees_imports_inside_functions_but_not_typing_only_ones(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n"
                      "def f():\n    from gnnseg.seg.sam.training import finetune\n")
    assert imported_modules(module) == ["typing", "gnnseg.seg.sam.training"]
