# Two commands on a fresh clone: `make run` (the app on the built-in demo model) and `make test`.
# Both create .venv from the pinned requirements when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# test workers (pytest-xdist; each takes whole test files, so module fixtures such as a live app stay shared)
TEST_JOBS ?= 2
STAMP := $(VENV)/.installed-$(shell cat requirements.txt constraints.txt | cksum | cut -d' ' -f1)
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY := 1
export GRADIO_ANALYTICS_ENABLED := False
export TOKENIZERS_PARALLELISM := false

.PHONY: venv demo-model safety-model run test bench clean-venv

$(STAMP): requirements.txt constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -c constraints.txt
	rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

demo-model: $(STAMP)
	$(BIN)/python -m train.demo

# The crisis classifier and the learned reply screen (models/safety/, ~20 s, rebuilt when their data change).
safety-model: $(STAMP)
	$(BIN)/python -m mvp.safety train --if-missing

run: demo-model safety-model
	$(BIN)/python app.py $(ARGS)

test: safety-model
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS)

bench: demo-model safety-model
	$(BIN)/python -m bench.run_all

clean-venv:
	rm -rf $(VENV)
