# The README's commands. Each one sets up .venv on a fresh machine when needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# CPU torch that lies on disk here; on a GPU server use e.g. `make TORCH=torch==2.13.0 ...` with a CUDA index,
# or install torch yourself first: an importable torch is never replaced.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint bench clean demo-model demo-seg-model

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m kneeoa demo

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# The bundled demo checkpoint (Resources/demo_model.safetensors): a narrow dual-head ResNet3D trained on the
# phantom, then calibrated (temperatures, conformal KL/OA sets, OOD statistics) on 120 fresh phantom knees of
# another seed, with the training knees as the in-distribution reference. Deterministic on CPU; about 5 minutes
# for the training and 3 for the calibration phantom + calibration on 2 cores.
DEMO_MODEL_DIR := build/demo-model
demo-model: $(STAMP)
	rm -rf $(DEMO_MODEL_DIR)
	$(PY) -m kneeoa phantom $(DEMO_MODEL_DIR)/phantom --train 200 --test 50 --shape 64 64 64 --seed 11
	$(PY) -m kneeoa train --data $(DEMO_MODEL_DIR)/phantom --backbone resnet3d --variant dual --preset quick \
		--input-size 48 --width 8 --epochs 25 --seed 0 --out $(DEMO_MODEL_DIR)/run
	$(PY) -m kneeoa phantom $(DEMO_MODEL_DIR)/calibration --train 100 --test 20 --shape 64 64 64 --seed 12
	$(PY) -m kneeoa calibrate --checkpoint $(DEMO_MODEL_DIR)/run/checkpoints/last.safetensors \
		--data $(DEMO_MODEL_DIR)/calibration --split all --ood-data $(DEMO_MODEL_DIR)/phantom --ood-split train \
		--out Resources/demo_model.safetensors --overwrite

# The bundled demo segmenter (Resources/demo_seg_model.safetensors, ~1.2 MB): the quick preset's UNet (width 8)
# trained on a 64^3 phantom with masks. Deterministic on CPU; about 15 minutes on 2 busy cores.
DEMO_SEG_DIR := build/demo-seg-model
demo-seg-model: $(STAMP)
	rm -rf $(DEMO_SEG_DIR)
	$(PY) -m kneeoa phantom $(DEMO_SEG_DIR)/phantom --train 60 --test 20 --shape 64 64 64 --seed 12
	$(PY) -m kneeoa train-seg --data $(DEMO_SEG_DIR)/phantom --preset quick --seed 0 --out $(DEMO_SEG_DIR)/run
	cp $(DEMO_SEG_DIR)/run/checkpoints/last.safetensors Resources/demo_seg_model.safetensors
