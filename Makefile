# One entry point for people and CI. `make install` builds .venv; every other target depends on it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Pinned: on our machines this version resolves to a local CPU wheel; an unpinned torch pulls GBs of CUDA.
TORCH_VERSION ?= 2.13.0

RUN_MODEL ?= agss-lite
BENCH_SEQ ?= ../shared/data/real/blackswan

TRAIN_DATA ?= ../shared/data/davis2016-train-240p
comma := ,
VAL_DATA ?= ../shared/data/real
COCO_DATA ?= ../shared/data/coco-subset

.PHONY: install run test test-browser lint bench bench-service bench-live bench-takeover soak load fuzz mutate train-default gpu-pack eval eval-composites \
	package-check clean

# The editable install also generates the gRPC stubs from proto/ (setup.py); a changed .proto re-runs it.
$(VENV)/.installed: pyproject.toml setup.py $(wildcard proto/agss/v1/*.proto)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	AGSS_MODEL=$${AGSS_MODEL:-$(RUN_MODEL)} $(VENV)/bin/agss-vos serve

test: install
	$(PY) -m pytest -q

# The web console in headless Chromium (Debian's chromium package); refreshes the screenshots in docs/console/.
test-browser: install
	AGSS_CONSOLE_SHOTS=docs/console $(PY) -m pytest -q tests/browser

lint: install
	$(VENV)/bin/ruff check service tests tools

bench: install
	$(VENV)/bin/agss-vos bench model --config resnet50 --long-side 864 --objects 1,2,4,8 --plot docs/bench_model_cpu.png

bench-service: install
	$(VENV)/bin/agss-vos bench service $(BENCH_SEQ)/JPEGImages --masks $(BENCH_SEQ)/Annotations/00000.png \
		--model $${AGSS_MODEL:-$(RUN_MODEL)}

bench-live: install
	$(VENV)/bin/agss-vos bench live $(BENCH_SEQ)/JPEGImages --masks $(BENCH_SEQ)/Annotations/00000.png \
		--frames 200 --rates 5,10,25
	$(VENV)/bin/agss-vos bench live $(BENCH_SEQ)/JPEGImages --masks $(BENCH_SEQ)/Annotations/00000.png \
		--failover --rates 5 --frames 150

# A 260-frame video made of the bench sequence played forward and back, killed at frames 10 and 200.
bench-takeover: install
	mkdir -p build
	$(PY) -c "import zipfile, pathlib; s = sorted(pathlib.Path('$(BENCH_SEQ)/JPEGImages').iterdir()); \
		o = ((s + s[::-1]) * 6)[:260]; z = zipfile.ZipFile('build/long.zip', 'w'); \
		[z.write(f, f'{i:05d}.jpg') for i, f in enumerate(o)]; z.close()"
	$(VENV)/bin/agss-vos bench takeover build/long.zip --masks $(BENCH_SEQ)/Annotations/00000.png --kill-at 10,200

# The long versions of the fault, load and fuzz tests (docs/RELIABILITY.md has their numbers).
soak: install
	AGSS_SOAK_JOBS=20 AGSS_SOAK_WORKERS=3 $(PY) -m pytest -q -s tests/integration/test_faults.py -k soak

load: install
	AGSS_LOAD_CLIENTS=200 AGSS_LOAD_BURST=50 $(PY) -m pytest -q -s tests/integration/test_robustness.py -k clients

fuzz: install
	AGSS_FUZZ_EXAMPLES=100 $(PY) -m pytest -q -s tests/integration/test_robustness.py -k "schemathesis or grpc"

# Mutation testing of the modules whose bugs would lose or corrupt work, against the fast tests that cover
# them; resumable (results in ./mutants/); fails when a module has under 85 % killed (docs/TESTING.md).
MODULES ?=
mutate: install
	$(PY) tools/mutate.py run $(MODULES)

# Reproduces service/models/agss-lite from ../shared/data (DAVIS 2016, CC BY-NC 4.0; COCO annotations CC BY 4.0,
# images under their Flickr licences) in two stages, each resumable: 5000 clips of DAVIS from ImageNet (the
# first default model), then 3000 clips of DAVIS, COCO still-image clips, fast clips and corrupted previous
# masks on top of it (docs/TRAINING.md, experiment B). The export measures it next to the model it replaces.
# TRAIN_FLAGS="--device cuda --workers 6" trains on a GPU (mixed precision; the same clips, made ahead on 6 cores).
TRAIN_FLAGS ?=
train-default: install
	$(VENV)/bin/agss-vos train --config configs/agss-lite.json --data $(TRAIN_DATA) --val $(VAL_DATA) \
		--out runs/agss-lite $(TRAIN_FLAGS)
	$(VENV)/bin/agss-vos train --config configs/agss-lite-finetune.json --data $(TRAIN_DATA) --data $(COCO_DATA) \
		--val $(VAL_DATA) --out runs/agss-lite-finetune --export service/models/agss-lite $(TRAIN_FLAGS)

# A GPU session's training (docs/TRAINING.md, "Training on a GPU"): the training data and the inits that
# configs/gpu-plan.json names packed into .gpudata/packed (about 41 MiB; with the checkout under the 64 MiB a
# call may carry), and the one wheel the GPU machine lacks into .whl. Then one call of the device tool's `run`
# with carry [".gpudata/packed", ".whl"] and timeout_s 580:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site
#     .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 || exit; python3 tools/gpu_session.py
#     run .gpudata/packed configs/gpu-plan.json --out $OUT --budget 490 --calibrate 15 --no-compare-fp32
# and `python tools/gpu_session.py join DIR NAME --like lite2 --to runs/NAME` here for each model back.
gpu-pack: install
	$(VENV)/bin/pip install -q imageio-ffmpeg
	rm -rf .gpudata/packed
	$(PY) tools/gpu_session.py pack .gpudata/packed --davis $(TRAIN_DATA) --coco $(COCO_DATA) --init lite2=imagenet:lite2
	$(VENV)/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl pycocotools==2.0.10

# J&F per sequence of the default model and flow-only (plus EVAL_MODELS, e.g. a candidate run folder), in one
# run, on the real sequences as they are, every 3rd frame of them (fast motion), and composites of both.
# EVAL_COMPOSITES=12 makes three times the composites from the same sequences: 4 are noise-sized (TRAINING.md, G).
# The tracker runs with its occlusion handling, as it does by default; EVAL_FLAGS=--no-occlusions for without.
EVAL_MODELS ?=
EVAL_MODEL_LIST = agss-lite$(if $(EVAL_MODELS),$(comma)$(EVAL_MODELS)),flow-only
EVAL_COMPOSITES ?= 4
EVAL_FLAGS ?=
eval: install
	$(PY) -m service.training.report --models $(EVAL_MODEL_LIST) \
		--data $(VAL_DATA) --composites $(EVAL_COMPOSITES) $(EVAL_FLAGS)

# A second composite set (docs/TRAINING.md, experiment Q): 16 composites, and 16 of every 3rd frame, drawn with
# another seed from the training sequences. Every model here has seen those sequences (not these videos), so it
# checks tracker changes and composite results of the table above; it is not a held-out score.
eval-composites: install
	$(PY) -m service.training.report --models $(EVAL_MODEL_LIST) \
		--data $(TRAIN_DATA) --composites 16 --composite-seed 99 --groups composites,fast-composites $(EVAL_FLAGS)

# What a user does: build the wheel, install it with its dependencies into a fresh environment, run it
# from an empty folder (tests/e2e/test_package.py does the same quickly, sharing the dependencies).
package-check:
	rm -rf build/package-check && mkdir -p build/package-check/empty
	$(PYTHON) -m pip wheel -q --no-deps . -w build/package-check/dist
	$(PYTHON) -m venv build/package-check/venv
	build/package-check/venv/bin/pip install -q "torch==$(TORCH_VERSION)"
	build/package-check/venv/bin/pip install -q build/package-check/dist/agss_vos_service-*.whl
	cd build/package-check/empty && ../venv/bin/agss-vos serve --help > /dev/null && \
		../venv/bin/agss-vos segment $(abspath $(BENCH_SEQ))/JPEGImages --masks \
		$(abspath $(BENCH_SEQ))/Annotations/00000.png --out masks && ls masks | wc -l

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info service/grpc/pb
