# facegnet: `make install`, `make demo`, `make test`. Python 3.11 (torch 2.14.1 / torchvision 0.29.1 wheels).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.facegnet-installed

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch and torchvision first, pinned: the versions the project is tested with.
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[test]'
	# facenet-pytorch pins an old torch; its MTCNN needs nothing beyond what is installed above.
	$(PY) -m pip install --quiet --no-deps facenet-pytorch==2.6.0
	touch $(STAMP)

# The main job: verify the bundled sample photos from the command line.
demo: install
	$(PY) apps/demo.py

test: install
	$(PY) -m pytest

bench: install
	$(PY) benchmarks/pipeline_speed.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
