# Everything a fresh machine needs: `make demo` (set-up + the main job), `make test` (set-up + tests).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: setup demo test bench preview train clean constraints

setup: $(VENV)/.installed

# torch is installed first and pinned (2.13.0 CPU): an unpinned torch drags in CUDA packages.
# constraints.txt pins every other package, so a fresh machine gets the versions the tests passed with.
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[dev,export]"
	@$(PY) -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') and not torch.version.cuda else 'torch %s is not the pinned CPU build' % v)"
	touch $@

demo: setup
	$(VENV)/bin/bodycorr demo -o out/demo

test: setup
	$(VENV)/bin/pytest

preview: setup
	$(VENV)/bin/bodycorr generate --preview out/preview.png

bench: setup
	for f in bench/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

# re-pin after changing dependencies: a fresh venv without constraints, then its versions
constraints:
	rm -rf .venv-pin && python3 -m venv .venv-pin && .venv-pin/bin/pip install -q --upgrade pip
	.venv-pin/bin/pip install -q torch==2.13.0 && .venv-pin/bin/pip install -q -e ".[dev,export]"
	{ head -n 2 constraints.txt; .venv-pin/bin/pip freeze --exclude-editable; } > constraints.new && mv constraints.new constraints.txt
	rm -rf .venv-pin

clean:
	rm -rf out .pytest_cache
