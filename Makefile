# strata — two entry points for a new machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEB_PACKAGES := ostree rpm python3-rpm createrepo-c bubblewrap dpkg-dev apt-utils nginx \
                mmdebstrap busybox-static e2fsprogs xz-utils zstd gpgv openssl python3-gi \
                swig cmake cpio gcc libc6-dev podman qemu-system-x86 time

.PHONY: test demo bench deps venv clean lint

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

# PyPI's solv wheels are built without Debian semantics; build the same release
# from its sdist with them (pip caches the wheel, so this happens once a machine).
# strata itself is installed editable in "compat" mode: a plain path in a .pth
# instead of an import finder, which halves interpreter start-up for every command.
SOLV_CMAKE_ARGS := -DMULTI_SEMANTICS=ON -DENABLE_DEBIAN=ON

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	CMAKE_ARGS="$(SOLV_CMAKE_ARGS)" $(PY) -m pip install -q --no-binary solv \
	  --config-settings editable_mode=compat -e '.[test]'
	$(PY) -c 'import solv, sys; sys.exit(solv.Pool().setdisttype(solv.Pool.DISTTYPE_DEB) < 0)' \
	  || { echo "solv lacks Debian support"; exit 1; }
	touch $@

venv: deps $(VENV)/.installed

test: deps venv
	$(PY) -m pytest -q -p no:cacheprovider --durations=25

demo: deps venv
	$(PY) -m layering.demo

bench: deps venv
	$(PY) bench/store.py

lint: venv
	$(PY) -m ruff check store importers boot layering tests bench fixtures
	$(PY) -m mypy store importers boot layering

clean:
	rm -rf $(VENV) demo-work bench/out
