# The two commands of README.md: `make serve` and `make test`. Everything else is a helper.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip -q --disable-pip-version-check
# pytest arguments for `make test`, e.g. make test ARGS="-k checks"
ARGS ?=

.PHONY: install serve test lint model samples

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) install -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

serve: install
	$(VENV)/bin/unmask serve

test: install
	bash scripts/test-deps.sh
	$(PY) -m pytest $(ARGS)

lint: install
	$(VENV)/bin/ruff check server worker migrations tests bench models
	$(VENV)/bin/ruff format --check server worker migrations tests bench models

model: install
	$(PY) models/build_default.py --out models/default
