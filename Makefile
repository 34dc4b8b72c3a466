# Developer entry points. The README names `make chat` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: chat test lint typecheck unit bench venv vendor-runtime compiler model-deb verify-default-bmodel clean

venv:
	@./scripts/bootstrap.sh

vendor-runtime: venv
	@./scripts/fetch-vendor-runtime.sh

# tpuc-opt, model_tool and the PPL toolchain from the same wheel (llm-tpu models compile)
compiler: vendor-runtime
	@./scripts/fetch-vendor-compiler.sh

chat: venv
	@$(VENV)/bin/llm-tpu chat

lint: venv
	$(VENV)/bin/ruff check appliance provisioning tests bench
	$(VENV)/bin/ruff format --check appliance provisioning tests bench

typecheck: venv
	$(VENV)/bin/mypy

# The cmodel simulator keeps busy-polling threads (about two cores) for the rest of a process once a
# runtime exists, so its tests run alone, in their own process, after everything else.
unit: venv vendor-runtime compiler
	$(PY) -m pytest -q -m "not cmodel"
	$(PY) -m pytest -q -m cmodel

test: lint typecheck unit

# The package llm-tpu-model-smollm2-135m (dist/): the embedded model compiled for the TPU, bf16 and w4bf16.
model-deb: venv compiler
	@./packaging/llm-tpu-model-smollm2-135m/make-model-deb.sh

# Slow (the cmodel runs the seq-512 prefill): the packaged bf16 default gives torch's tokens. Not in `test`.
verify-default-bmodel: model-deb vendor-runtime
	$(PY) -m bench.verify_default_bmodel

bench: venv vendor-runtime
	$(PY) -m bench

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache
