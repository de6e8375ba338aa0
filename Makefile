# The two commands a fresh machine needs: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch==2.13.0 is the local CPU build on these machines; a user who already has a
# torch in the venv (for example a CUDA build) keeps it.
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test install install-test bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $@

install: $(VENV)/.installed

# the run is named here, so the report draws this run and no other
demo: install
	name=demo-$$(date +%Y%m%d-%H%M%S) && \
	$(VENV)/bin/policyforge train --config configs/demo.yaml --train.run-name $$name && \
	$(VENV)/bin/policyforge report runs/$$name

test: install
	$(PY) -m pytest -q tests

bench: install
	echo "torch==$$($(PY) -c "import torch; print(torch.__version__.split('+')[0])")" > $(VENV)/torch-pin.txt
	$(PY) -m pip install -q -c $(VENV)/torch-pin.txt -c constraints.txt -e ".[bench]"
	$(PY) bench/vs_trl.py

clean:
	rm -rf $(VENV) runs
