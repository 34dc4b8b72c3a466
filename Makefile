# Developer entry points. The README names `make chat` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: chat test lint typecheck unit bench venv vendor-runtime compiler clean deb deb-arm64 repo \
	package-test test-arm64 model-deb verify-default-bmodel \
	verify-default-bmodel-packaged

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
	$(VENV)/bin/ruff check appliance provisioning tests bench scripts
	$(VENV)/bin/ruff format --check appliance provisioning tests bench scripts
	cd provisioning/ansible && ../../$(VENV)/bin/ansible-lint -q --profile production site.yml roles

typecheck: venv
	$(VENV)/bin/mypy

# The cmodel simulator keeps busy-polling threads (about two cores) for the rest of a process once a
# runtime exists, so its tests run alone, in their own process, after everything else.
unit: venv vendor-runtime compiler
	$(PY) -m pytest -q -m "not cmodel and not package"
	$(PY) -m pytest -q -m "cmodel and not package"

test: lint typecheck unit package-test

# The Debian package (root; Debian's tools with the system PATH: pyenv first on PATH breaks dh).
# Built in a cached Debian 11 chroot; see scripts/build_deb.py. dist/ receives the .deb files.
SYSPATH := PATH=/usr/sbin:/usr/bin:/sbin:/bin
deb: venv
	$(SYSPATH) python3 scripts/build_deb.py --arch amd64

deb-arm64: venv
	$(SYSPATH) python3 scripts/build_deb.py --arch arm64

# A signed apt repository in dist/repo holding both architectures (a throwaway key unless
# LLM_TPU_REPO_GNUPGHOME names a keyring with the signing key).
repo: deb deb-arm64
	$(SYSPATH) python3 scripts/make_repo.py dist dist/repo

# Install, run, upgrade, remove and purge the package from the signed repository in clean Debian 11
# and 12 chroots (tests/package/). The repository holds the amd64 package only here, so that CI does
# not build the arm64 one on every change (make test-arm64 does). -s: the measured times (install,
# fleet runs) go into the log.
package-test: deb
	$(SYSPATH) python3 scripts/make_repo.py --arch amd64 dist dist/repo
	$(PY) -m pytest -q -s -p no:cacheprovider tests/package -m "package and not arm64"

# The arm64 package from the two-architecture repository in an arm64 Debian 12 chroot under
# qemu-user-static (binfmt registered for the test only).
test-arm64: repo
	$(PY) -m pytest -q -s -p no:cacheprovider tests/package -m "package and arm64"

# The package llm-tpu-model-smollm2-135m (dist/): the embedded model compiled for the TPU, bf16 and w4bf16.
model-deb: venv compiler
	@./packaging/llm-tpu-model-smollm2-135m/make-model-deb.sh

# The default model's bf16 build, compiled by model-deb's command at seq 128, gives torch's tokens on the
# cmodel (22 CPU-minutes: about 12 min on 2 idle cores). Not in `test`. The -packaged variant runs the seq-512 build out of the
# package itself: hours on the simulator.
verify-default-bmodel: compiler
	$(PY) -m bench.verify_default_bmodel

verify-default-bmodel-packaged: model-deb vendor-runtime
	$(PY) -m bench.verify_default_bmodel --packaged

bench: venv vendor-runtime compiler
	$(PY) -m bench

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache dist
