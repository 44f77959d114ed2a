# Two commands on a fresh machine: `make reproduce` (the main job) and `make test`. Both install first.
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= mini
# torch is pinned to the CPU wheel this project is tested with; on a GPU machine or elsewhere, e.g.
#   make reproduce TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu128"
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.s2l-installed

.PHONY: help install main reproduce publish regimes test test-fast lint lab bench sync clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:[^#]*## /\t/' | expand -t 14

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)" $(TORCH_PIP_ARGS)
	$(PY) -m pip install -q -e ".[dev]" -c constraints.txt
	touch $(STAMP)

install: $(STAMP)  ## create .venv with the pinned stack

# mini: the reproduction's main line (setup, target, attacks on the target, the main experiment, the report);
# WITH="12 13" adds the ablations and the domain transfer (make publish adds them: their tables are committed),
# NOTEBOOKS="..." replaces the line; FORCE=1 reruns notebooks that already finished (cached artefacts are reused)
NOTEBOOKS_mini := 00 01 09 10 11 14
PUBLISH_WITH_mini := 12 13
NOTEBOOKS ?= $(NOTEBOOKS_$(PROFILE))
WITH ?=
RUN_FLAGS := $(if $(FORCE),--force)
# mini and full: after the target, the cells of the main experiment and the domain transfer run as sweeps of JOBS
# parallel jobs (one per core: about 1.8x faster than one job on 2 cores); 11 and 13 then read them back
SWEEPS_mini := sweeps/mini_main.yaml
SWEEPS_full := sweeps/full_main.yaml sweeps/full_transfer.yaml
JOBS ?= 2

main: $(STAMP)  ## run PROFILE's notebooks (default mini; full and sd: all) into runs/PROFILE/, writing nothing else
ifneq ($(SWEEPS_$(PROFILE)),)
	$(PY) -m s2l_utils.run --profile $(PROFILE) 00 01 $(RUN_FLAGS)
	for sweep in $(SWEEPS_$(PROFILE)); do $(PY) -m s2l_utils.sweep $$sweep --jobs $(JOBS) $(RUN_FLAGS) || exit 1; done
endif
	$(PY) -m s2l_utils.run --profile $(PROFILE) $(if $(NOTEBOOKS),$(sort $(NOTEBOOKS) $(WITH))) $(RUN_FLAGS)

reproduce: main  ## the main job: run PROFILE, then compare its tables with the committed ones (non-zero if a verdict flips)
	$(PY) -m s2l_utils.check --profile $(PROFILE)

publish: WITH += $(PUBLISH_WITH_$(PROFILE))
publish: main  ## for maintainers: run PROFILE, then write its tables, results page and figures into the repository
	$(PY) -m s2l_utils.run --profile $(PROFILE) 14 -p publish=true --force

# the regime study (notebook 15): two sweeps per world, each about 80 minutes on 2 cores with JOBS=2; a
# finished shard is published to data/results/regimes/ (commit it), then 15 judges the pre-registered hypotheses
# from every published shard. The i.i.d. shards need their own target (no duplicated members), pretrained first,
# and so do H4's two shards (a wider UNet), pre-registered to run after the grid:
# make regimes SHARDS="regimes_capacity_lora_dreambooth regimes_capacity_ti_dblora".
comma := ,
REGIME_SHARDS := $(foreach world,regimes_duplicated regimes_iid regimes_duplicated_shift regimes_iid_shift,\
	$(world)_lora_dreambooth $(world)_ti_dblora) regimes_zero_knowledge
SHARDS ?= $(REGIME_SHARDS)

regimes: $(STAMP)  ## run the regime shards SHARDS (default the grid and zero-knowledge), publish each, then 15
	$(PY) -m s2l_utils.run --profile mini 00 01
	$(if $(filter regimes_iid%,$(SHARDS)),$(PY) -m s2l_utils.run --profile mini 01 -p "member_duplicates=[]")
	$(if $(filter regimes_capacity%,$(SHARDS)),$(PY) -m s2l_utils.run --profile mini 01 -p "unet_channels=[32$(comma)64]")
	for shard in $(SHARDS); do $(PY) -m s2l_utils.sweep sweeps/$$shard.yaml --jobs $(JOBS) \
		&& $(PY) -m s2l_utils.regimes publish sweeps/$$shard.yaml || exit 1; done
	$(PY) -m s2l_utils.run --profile mini 15 -p publish=true --force

test: $(STAMP)  ## the whole test suite, notebooks included (offline)
	$(PY) -m pytest

test-fast: $(STAMP)  ## the package tests only
	$(PY) -m pytest -m "not notebooks"

lint: $(STAMP)  ## ruff over the package, tests, benchmarks and the notebooks' .py twins
	$(VENV)/bin/ruff check .

lab: $(STAMP)  ## JupyterLab on notebooks/ (as root too: docker, clusters, Colab-like images)
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

bench: $(STAMP)  ## throughput of the miniature target on this machine
	$(PY) benchmarks/bench_target.py

sync: $(STAMP)  ## after editing a notebook: refresh its .py twin (or the reverse) and strip outputs
	$(VENV)/bin/jupytext --sync notebooks/[0-9][0-9]_*.ipynb
	$(VENV)/bin/jupyter nbconvert --clear-output --inplace notebooks/[0-9][0-9]_*.ipynb

clean:  ## remove runs and generated worlds (keeps .venv)
	rm -rf runs data/worlds
