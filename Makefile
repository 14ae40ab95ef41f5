# VideoCrafter for ComfyUI — developer entry points. `make demo` and `make test` work on a fresh machine.
# HOST=0.3.75 (default) or HOST=0.33: which supported ComfyUI `make setup` builds and the targets run on
HOST ?= 0.3.75
export HOST
PY := $(if $(filter 0.3.75,$(HOST)),.venv,.venv-0.33)/bin/python
CKPT ?=
MODEL ?=

.PHONY: setup test demo benchmark workflows docs clean

setup:
	bash scripts/setup_host.sh

test: setup
	cd tests && ../$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

demo: setup
	$(PY) scripts/demo.py $(if $(CKPT),--ckpt "$(CKPT)") $(if $(MODEL),--model "$(MODEL)")

benchmark: setup
	$(PY) scripts/benchmark.py $(BENCH_ARGS)

# the shipped graphs, then the README's tables (they list the graphs)
workflows:
	$(PY) scripts/build_workflows.py
	$(PY) scripts/build_train_workflow.py
	$(PY) scripts/readme_tables.py

# README.md's tables of models, workflows and nodes, from the registry and the nodes (tests/test_readme.py checks them)
docs:
	$(PY) scripts/readme_tables.py

clean:
	rm -rf .venv .host .venv-0.33 .host-0.33 output .demo
