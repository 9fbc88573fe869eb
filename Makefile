# One entry point for people and CI. `make install` builds .venv; every other target depends on it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Pinned: on our machines this version resolves to a local CPU wheel; an unpinned torch pulls GBs of CUDA.
TORCH_VERSION ?= 2.13.0

# Until a trained default model ships in models/agss-lite, `make run` serves the flow-only baseline.
RUN_MODEL ?= $(if $(wildcard models/agss-lite/model.json),agss-lite,flow-only)
BENCH_SEQ ?= ../shared/data/real/blackswan

TRAIN_DATA ?= ../shared/data/davis2016-train-240p
VAL_DATA ?= ../shared/data/real

.PHONY: install run test lint bench bench-service train-default eval clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m service.grpc.stubs
	touch $@

install: $(VENV)/.installed

run: install
	AGSS_MODEL=$${AGSS_MODEL:-$(RUN_MODEL)} $(VENV)/bin/agss-vos serve

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check service tests

bench: install
	$(VENV)/bin/agss-vos bench model --config resnet50 --long-side 864 --objects 1,2,4,8 --plot docs/bench_model_cpu.png

bench-service: install
	$(VENV)/bin/agss-vos bench service $(BENCH_SEQ)/JPEGImages --masks $(BENCH_SEQ)/Annotations/00000.png \
		--model $${AGSS_MODEL:-$(RUN_MODEL)}

# Reproduces models/agss-lite from ../shared/data (DAVIS 2016, CC BY-NC 4.0); resumable.
train-default: install
	$(VENV)/bin/agss-vos train --config configs/agss-lite.json --data $(TRAIN_DATA) --val $(VAL_DATA) \
		--out runs/agss-lite --export models/agss-lite

eval: install
	$(VENV)/bin/agss-vos validate --models agss-lite,flow-only --data $(VAL_DATA) --composites 4

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
