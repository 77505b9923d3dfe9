# The two commands of the README: `make quickstart` and `make test`.
# Both create .venv (pip, pinned versions from requirements.txt) when it is missing or stale.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.zeroi2v-installed
OUT    ?= runs/quickstart

export HF_HUB_OFFLINE ?= 1
export GRADIO_ANALYTICS_ENABLED ?= False
export PYTHONUNBUFFERED ?= 1

.PHONY: venv test quickstart demo browser-deps bench clean-venv

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# Chromium drives the browser test; Debian's package, installed when missing and when we may.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium ffmpeg >/dev/null) \
	      || echo "warning: could not install chromium; the browser test will say so"; \
	  else echo "note: chromium missing and not root; install it to run the browser test"; fi; }

test: venv browser-deps
	$(PY) -m pytest -q

quickstart: venv
	$(PY) -m zeroi2v quickstart --out $(OUT)

demo: venv
	$(PY) -m zeroi2v demo --checkpoint $(OUT)/merged

bench: venv
	$(PY) benchmarks/zero_cost.py

clean-venv:
	rm -rf $(VENV)
