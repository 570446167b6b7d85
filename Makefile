# fslcli — set-up, demo and tests. Only Python 3.10+ and make are needed.
#   make demo                      render the offline dataset, train a short run, evaluate, plot
#   make test                      install with the test extras and run the test suite
#   make demo TORCH=torch==2.6.0   choose the torch build (installed first, pinned)

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
# Extra pip arguments for the torch install, e.g. --index-url https://download.pytorch.org/whl/cpu
TORCH_PIP_ARGS ?=
DEMO_DIR ?= demo
DEMO_STEPS ?= 300
PY := $(VENV)/bin/python
FSL := $(VENV)/bin/fsl

.PHONY: install install-test demo test lint format bench-speed bench-accuracy clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: an unpinned torch pulled in by another package is a multi-GB CUDA build.
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH)"
	$(PY) -m pip install --quiet -e .
	# tinysoundfont renders the offline dataset. --no-deps: its declared dependency pyaudio is
	# only for live playback and fails to build without PortAudio headers.
	$(PY) -m pip install --quiet --no-deps "tinysoundfont>=0.3"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	@mkdir -p $(DEMO_DIR)
	$(FSL) download tinysol-gm
	$(FSL) train --dataset tinysol-gm --steps $(DEMO_STEPS) --out $(DEMO_DIR)/run --force
	$(FSL) eval $(DEMO_DIR)/run/model.pt --json > $(DEMO_DIR)/eval.json
	$(FSL) plot-episode $(DEMO_DIR)/run/model.pt --out $(DEMO_DIR)/episode.html
	@$(PY) -c "import json; r = json.load(open('$(DEMO_DIR)/eval.json')); \
	print(f\"\nDemo finished (a short {$(DEMO_STEPS)}-step run). 5-way 5-shot accuracy on the held-out instruments: \" \
	      f\"{r['mean_accuracy']:.3f} ± {r['ci95_half_width']:.3f} (95% CI, {r['episodes']} episodes)\"); \
	print('Wrote: $(DEMO_DIR)/run/model.pt, $(DEMO_DIR)/run/learning_curves.html, $(DEMO_DIR)/eval.json, $(DEMO_DIR)/episode.html')"

test: $(VENV)/.installed-test
	$(PY) -m pytest

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check fslcli tests benchmarks
	$(VENV)/bin/ruff format --check fslcli tests benchmarks

format: $(VENV)/.installed-test
	$(VENV)/bin/ruff format fslcli tests benchmarks
	$(VENV)/bin/ruff check --fix fslcli tests benchmarks

bench-speed: $(VENV)/.installed
	$(PY) benchmarks/speed.py

bench-accuracy: $(VENV)/.installed
	$(PY) benchmarks/accuracy.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
