# genbench: `make train` and `make test` do all the set-up a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: install data train trilemma test test-all tb clean

install: $(STAMP) data

# The venv, every package and genbench itself (editable). Re-runs when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,cluster]"
	touch $@

# Fashion-MNIST from Debian's package when apt-get is there; otherwise say what to do instead.
data:
	@if [ -d $(FMNIST) ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) >/dev/null \
		&& echo "installed Fashion-MNIST into $(FMNIST)"; \
	elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then \
		sudo apt-get install -y -q dataset-fashion-mnist; \
	else \
		echo "Fashion-MNIST: no apt-get here. Train with data.download=true to fetch it through torchvision."; \
	fi

train: install
	$(BIN)/genbench train model=diffusion $(ARGS)

# The trilemma sweep (scripts/trilemma.py): gan,vae,diffusion x seeds 0,1,2 x equal training FLOPs (1.85e14) and
# equal training time (10m), each run in outputs/trilemma/<budget>/<family>-seed<seed>, then `genbench compare`
# per budget into outputs/trilemma/compare_<budget>/, after FID against NFE on seed 0's diffusion runs; each finished
# run's record (no weights) is kept in docs/trilemma/runs/<budget>/<family>-seed<seed>, where it counts as done. It prints
# each job's state and an ETA for this machine first; re-run it after a Ctrl-C to resume (finished jobs are skipped). `make trilemma ARGS="--dry-run"` shows the plan only;
# `make trilemma ARGS="--help"` lists the flags (--families, --seeds, --budgets, --flops, --time, --jobs, ...).
trilemma: install
	$(BIN)/python scripts/trilemma.py --archive docs/trilemma/runs --pace docs/trilemma/pace.json $(ARGS)

# One pytest worker per core (pytest-xdist): the default suite takes about a minute on 2 cores.
# `make test ARGS="-n 0 tests/test_cli.py"` runs one file in this process.
test: install
	$(BIN)/python -m pytest -q -n auto $(ARGS)

test-all: install
	$(BIN)/python -m pytest -q -n auto -m "" $(ARGS)

# TensorBoard on this machine only; `make tb HOST=0.0.0.0` serves every network interface,
# `make tb LOGDIR=multirun` shows the sweeps.
HOST   ?= localhost
LOGDIR ?= outputs
tb: install
	$(BIN)/tensorboard --logdir $(LOGDIR) --host $(HOST)

clean:
	rm -rf $(VENV) .pytest_cache src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
