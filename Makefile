# Two commands: `make run` (default suite) and `make test` (test suite). Both set up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The torch pair that lies on this kind of machine's disk; any other version is a multi-GB download.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
FASHION_MNIST_DEB := /usr/share/datasets/fashion-mnist

.PHONY: run test data venv clean

run: $(STAMP) data
	$(PY) run_suite.py

# Tests make their own small data; the real Fashion-MNIST only enables one more check, so a failed fetch is no stop.
test: $(STAMP)
	-@$(MAKE) --no-print-directory data
	$(PY) -m pytest

venv: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Fashion-MNIST, the mini backbone's pre-training domain: Debian's package where apt is usable,
# otherwise the loader's own search (data folder, then torchvision's download).
data: $(STAMP)
	@if [ ! -d $(FASHION_MNIST_DEB) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 || true; \
	fi
	$(PY) -m benchmark.datasets.fashion_mnist

clean:
	rm -rf $(VENV) results
