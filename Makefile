# gnnseg: `make demo` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
BASE   := $(VENV)/.installed-base
FULL   := $(VENV)/.installed-test
DATA   ?= ../shared/datasets

.PHONY: setup demo test bench docs clean

# setup: everything (the package with every extra, the test oracles, ruff) for the tests and the benchmarks.
setup: $(FULL)

# The package alone, as pip installs it: enough for the demo. Rebuilt when the dependency list changes; torch is the
# CPU build pinned by constraints.txt (pyproject.toml declares the range gnnseg supports).
$(BASE): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e .
	$(PY) -m compileall -q src/gnnseg   # bytecode now, as pip writes a wheel's: read even where PYTHONDONTWRITEBYTECODE is set
	touch $(BASE)

$(FULL): $(BASE)
	$(PIP) install -q -c constraints.txt -e '.[test]'
	touch $(FULL)

demo: $(BASE)
	$(VENV)/bin/gnnseg demo

test: $(FULL)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

# docs/benchmarks.md and the README's headline table are rendered from their templates in docs/ and
# benchmarks/results/*.json (standard library only).
docs: ; $(PYTHON) benchmarks/render_results_page.py

# Benchmarks write benchmarks/results/; the U-Net trainings take 20-45 minutes each on 2 cores.
ISBI_BUDGET = --epochs 20 --iterations 40 --optimizer adamw
bench: $(FULL)
	$(PIP) install -q -c constraints.txt -e '.[test,bench]'
	$(PY) benchmarks/gnn_node_classification.py --root $(DATA)/planetoid
	$(PY) benchmarks/gnn_speed.py --root $(DATA)/planetoid
	$(PY) benchmarks/unet_sliding_window_speed.py
	$(PY) benchmarks/unet_mirrored_views.py
	$(PY) benchmarks/unet_freed_memory.py
	$(PY) benchmarks/unet_drive.py --source $(DATA)/drive
	$(PY) benchmarks/unet_isbi2012.py --source $(DATA)/isbi2012_em $(ISBI_BUDGET)
	$(PY) benchmarks/unet_isbi2012.py --source $(DATA)/isbi2012_em $(ISBI_BUDGET) --network umamba_bot --name umamba_isbi2012
	$(PY) benchmarks/unet_totalseg_ct.py --source $(DATA)/totalsegmentator_examples --epochs 30 --iterations 40 \
		--optimizer adamw --memory-gb 0.5 --intensity-shift 0.5
	$(PY) benchmarks/sam_box_prompt.py --data $(DATA)
	$(PY) benchmarks/sam_speed.py
	$(PY) benchmarks/lite_medsam_eval.py --data $(DATA) $(if $(wildcard runs/lite_medsam/teacher.pt),--teacher runs/lite_medsam/teacher.pt,)
	$(PY) benchmarks/lite_medsam_latency.py --data $(DATA)
	$(PY) benchmarks/serve_load.py --data $(DATA)
	$(PY) benchmarks/umamba_scan_speed.py
	$(PY) benchmarks/umamba_compare.py --source $(DATA)/drive
	$(PY) benchmarks/gnn_graph_classification.py --root $(DATA)/tudataset
	$(PY) benchmarks/gnn_oversmoothing.py --root $(DATA)/planetoid
	$(PY) benchmarks/gnn_sampling.py --root $(DATA)/planetoid
	$(PY) benchmarks/gnn_minibatch.py --root $(DATA)/planetoid
	$(PY) benchmarks/gnn_molecules.py --root $(DATA)/molecules
	$(PY) benchmarks/nnunet_dropin.py --repeats 3
	$(PY) benchmarks/napari_latency.py --data $(DATA)
	$(MAKE) docs

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
