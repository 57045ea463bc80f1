# Two entry points: `make eval` (demo evaluation -> reports/) and `make test` (the harness's own tests).
# Each creates .venv when missing and installs the project into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
EXTRAS ?= generate,embed,face,llm,report,dev
PYTEST_ARGS ?=

.PHONY: eval test install clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: 2.13.0 is a local CPU build here; an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

# pytest exits 5 when it collected no test; that must never pass as success.
define run_pytest
	$(BIN)/pytest $(1); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc
endef

eval: $(STAMP)
	$(call run_pytest,evals -n 4 -rxX $(PYTEST_ARGS))

test: $(STAMP)
	$(call run_pytest,tests -n 2 $(PYTEST_ARGS))

clean:
	rm -rf reports/*/ .pytest_cache
