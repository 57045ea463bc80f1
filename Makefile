# Two entry points: `make eval` (demo evaluation -> reports/) and `make test` (the harness's own tests).
# Each creates .venv when missing and installs the project into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
EXTRAS ?= generate,embed,face,arcface,maps,llm,report,dev
PYTEST_ARGS ?=

.PHONY: eval test install clean browser

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
	$(call run_pytest,evals -n auto -rxX $(PYTEST_ARGS))

test: $(STAMP) browser
	$(call run_pytest,tests -n 2 $(PYTEST_ARGS))

# Headless Chromium for the report's browser test (tests/test_report_browser.py). Installed from Debian when
# missing and apt-get is usable (as root, or through password-less sudo); never fails: without it the browser
# test is skipped and says why.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "note: no apt-get here: install Chromium and chromedriver yourself, or the browser test is skipped"; \
	else \
		if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
		if [ "$$SUDO" = none ]; then echo "note: installing chromium needs root: sudo apt-get install chromium chromium-driver (the browser test is skipped until then)"; \
		else echo "installing chromium and chromium-driver for the browser test"; \
			($$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
			|| echo "note: apt-get could not install chromium; the browser test will be skipped"; fi; \
	fi

clean:
	rm -rf reports/*/ .pytest_cache
