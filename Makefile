# strata — two entry points for a new machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEB_PACKAGES := ostree rpm createrepo-c bubblewrap dpkg-dev apt-utils nginx \
                mmdebstrap busybox-static e2fsprogs xz-utils zstd gpgv openssl python3-gi

.PHONY: test demo bench deps venv clean lint

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

test: deps venv
	$(PY) -m pytest -q -p no:cacheprovider

demo: deps venv
	$(PY) -m layering.demo

bench: deps venv
	$(PY) bench/store.py

lint: venv
	$(PY) -m ruff check store importers boot layering tests bench

clean:
	rm -rf $(VENV) demo-work bench/out
