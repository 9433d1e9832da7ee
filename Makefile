# edgesteer: the two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck check-all sysdeps clean

$(STAMP): pyproject.toml deploy/bootstrap-venv.sh
	bash deploy/bootstrap-venv.sh $(PYTHON) $(VENV)
	touch $(STAMP)

## make demo: the lab — emulated HK links, real probes, engine and built-in DNS on loopback.
demo: $(STAMP)
	$(VENV)/bin/edgesteer lab

## make test: system packages the tests need (as root, when missing), then the whole suite.
test: $(STAMP) sysdeps
	$(PY) -m ruff check edge probes dns_backends geo tests
	$(PY) -m mypy
	$(PY) -m pytest

sysdeps:
	@bash deploy/install-test-deps.sh

lint: $(STAMP)
	$(PY) -m ruff check edge probes dns_backends geo tests

typecheck: $(STAMP)
	$(PY) -m mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
