# VideoCrafter for ComfyUI — developer entry points. `make demo` and `make test` work on a fresh machine.
PY := .venv/bin/python
CKPT ?=
MODEL ?=

.PHONY: setup test demo benchmark workflows clean

setup:
	bash scripts/setup_host.sh

test: setup
	cd tests && ../$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

demo: setup
	$(PY) scripts/demo.py $(if $(CKPT),--ckpt "$(CKPT)") $(if $(MODEL),--model "$(MODEL)")

benchmark: setup
	$(PY) scripts/benchmark.py $(BENCH_ARGS)

workflows:
	$(PY) scripts/build_workflows.py

clean:
	rm -rf .venv .host output .demo
