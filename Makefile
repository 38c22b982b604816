# The two commands a new user needs: `make demo` and `make test`.
# Each creates .venv by itself on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export ORT_DISABLE_TELEMETRY := 1
export RAY_USAGE_STATS_ENABLED := 0

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[torch,zoo,ray,energy,plot,dev]'
	touch $(STAMP)

.PHONY: venv demo test bench paper clean
venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m finplan.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -m 'not ray' -p no:cacheprovider
	$(BIN)/python -m pytest -q -m ray -p no:cacheprovider

paper: $(STAMP)
	$(BIN)/python benchmarks/paper.py

bench: $(STAMP)
	$(BIN)/python benchmarks/speed.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache
