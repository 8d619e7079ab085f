# Two commands do all setup: `make demo` and `make test` create .venv when missing and install the package into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO ?= demo_work
ABS := $(BIN)/autobackswap

.PHONY: install demo test browser bench sample-data clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## demo: the pipeline on the shipped sample_data/ (CPU, a few minutes); results under $(DEMO)/
demo: $(STAMP)
	$(ABS) train-segmenter sample_data/train sample_data/labels -o $(DEMO)/segmenter.pt
	$(ABS) segment sample_data/train -m $(DEMO)/segmenter.pt -o $(DEMO)/masks/train --truth sample_data/masks/train
	$(ABS) segment sample_data/test -m $(DEMO)/segmenter.pt -o $(DEMO)/masks/test --truth sample_data/masks/test \
		--preview $(DEMO)/segment_preview.png
	@echo
	@echo "Results in $(DEMO)/:"
	@echo "  segmenter.pt (+ segmenter.pt.json: validation metrics)"
	@echo "  masks/train, masks/test   soft foreground masks (P(fg) * 255)"
	@echo "  segment_preview.png        test images with their masks outlined"

## browser: Debian's chromium for the real-browser tests (tests/test_labeler_browser.py), installed when missing
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	test -x $(CHROMIUM) || { $(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }

## test: the test suite (what CI runs)
test: $(STAMP) browser
	$(BIN)/python -m pytest -q

## bench: speed figures against their floors
bench: $(STAMP)
	$(BIN)/python benchmarks/segment.py

## sample-data: regenerate the committed sample_data/ (deterministic)
sample-data: $(STAMP)
	rm -rf sample_data
	$(ABS) sample-data sample_data --seed 0

clean:
	rm -rf $(DEMO) .pytest_cache
