# Two commands do all setup: `make demo` and `make test` create .venv when missing and install the package into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO ?= demo_work
ABS := $(BIN)/autobackswap

.PHONY: install demo test browser bench bench-real sample-data clean

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

## test: the test suite (what CI runs)
test: $(STAMP) browser
	$(BIN)/python -m pytest -q

## bench: speed and quality against their floors and peers, side by side (~10 minutes on 2 cores; run on a quiet machine)
bench: $(STAMP)
	$(BIN)/python benchmarks/segment.py
	$(BIN)/python benchmarks/inpaint.py
	$(BIN)/python benchmarks/compose.py
	$(BIN)/python benchmarks/label_effort.py
	$(BIN)/python benchmarks/background_reliance.py

## bench-real: the real-photo benchmark (benchmarks/real_photos.py): our defaults beside the ceiling and a zero-label
## peer on real photographs, two variants, 3 classifier seeds (~1 hour on 2 cores). Installs the [bench] extra.
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	touch $(BENCH_STAMP)
bench-real: $(BENCH_STAMP)
	$(BIN)/python benchmarks/real_photos.py --json benchmarks/out/real_photos.json

## sample-data: regenerate the committed sample_data/ (deterministic)
sample-data: $(STAMP)
	rm -rf sample_data
	$(ABS) sample-data sample_data --seed 0

clean:
	rm -rf $(DEMO) .pytest_cache
