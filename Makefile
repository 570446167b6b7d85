# fslcli — set-up, demo, tests and the figures the README quotes. Only Python 3.10+ and make are needed.
#   make install                   .venv with torch (pinned, installed first), fslcli and the renderer
#   make demo                      the bundled model on rendered examples, then render, train a short run, evaluate
#   make test                      install with the test extras and run the test suite
#   make reproduce                 every figure the README quotes (hours on a 2-core CPU)
#   make pretrained                rebuild fslcli/models/default.pt from scratch (about 20 minutes)
#   make demo TORCH=torch==2.6.0   choose the torch build

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
# Extra pip arguments for the torch install, e.g. --index-url https://download.pytorch.org/whl/cpu
TORCH_PIP_ARGS ?=
DEMO_DIR ?= demo
DEMO_STEPS ?= 300
RESULTS ?= benchmarks/results
PY := $(VENV)/bin/python
FSL := $(VENV)/bin/fsl

.PHONY: install install-test demo test lint format reproduce pretrained pretrained-check clean

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
	$(FSL) download examples --data-home $(DEMO_DIR)/examples --force
	$(FSL) predict --support $(DEMO_DIR)/examples/support $(DEMO_DIR)/examples/queries
	$(FSL) plot-episode --data-dir $(DEMO_DIR)/examples/all --shots 5 --queries 5 --out $(DEMO_DIR)/episode.html
	@echo "Then a model of your own: render the offline set, train a short run, evaluate it."
	$(FSL) download tinysol-gm
	$(FSL) train --steps $(DEMO_STEPS) --out $(DEMO_DIR)/run --force
	$(FSL) eval $(DEMO_DIR)/run/model.pt --json > $(DEMO_DIR)/eval.json
	@$(PY) -c "import json; r = json.load(open('$(DEMO_DIR)/eval.json')); \
	print(f\"\nDemo finished. The short {$(DEMO_STEPS)}-step run, 5-way 5-shot on the held-out instruments (in-font, grouped): \" \
	      f\"{r['mean_accuracy']:.3f} ± {r['ci95_half_width']:.3f} (95% CI, {r['episodes']} episodes)\"); \
	print('Wrote: $(DEMO_DIR)/episode.html, $(DEMO_DIR)/run/model.pt, $(DEMO_DIR)/run/learning_curves.html, $(DEMO_DIR)/eval.json')"

test: $(VENV)/.installed-test
	$(PY) -m pytest

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check fslcli tests benchmarks
	$(VENV)/bin/ruff format --check fslcli tests benchmarks

format: $(VENV)/.installed-test
	$(VENV)/bin/ruff format fslcli tests benchmarks
	$(VENV)/bin/ruff check --fix fslcli tests benchmarks

# The README's results table: the default and the tutorial's configuration, 3 seeds each, on three
# sample libraries (needs: apt-get install fluid-soundfont-gm musescore-general-soundfont), then
# the speed figures of the seed-0 default model.
reproduce: $(VENV)/.installed
	$(PY) benchmarks/libraries.py --seeds 0,1,2 --work-dir $(RESULTS)/work --out $(RESULTS)/libraries-cpu.json
	$(PY) benchmarks/speed.py --model $(RESULTS)/work/default-seed0/model.pt \
	    --data-home $(RESULTS)/work/data/TimGM6mb --out $(RESULTS)/speed-cpu.json

pretrained: $(VENV)/.installed
	$(PY) benchmarks/pretrained.py --out fslcli/models/default.pt

pretrained-check: $(VENV)/.installed
	$(PY) benchmarks/pretrained.py --check

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
