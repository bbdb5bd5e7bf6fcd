# dobj — the two commands a newcomer needs: `make demo` and `make test`.
# Both install what they need on a fresh Debian 12 machine (apt as root,
# a Python venv in .venv), then build with CMake (core, C tests, Lua module)
# and pip (the Python extension, from the same core sources).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BUILD := build
BUILD_ASAN := build-asan
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
DEB_PACKAGES := cmake libssl-dev libffi-dev libsqlite3-dev sqlite3 \
	lua5.4 liblua5.4-dev lua-busted nodejs npm
LUA_ENV := LUA_CPATH="$(CURDIR)/$(BUILD)/?.so;;" LUA_PATH="$(CURDIR)/tests/lua/?.lua;$(CURDIR)/examples/lua/?.lua;;"

.PHONY: all deps build venv workerd test test-c test-lua test-python sanitize demo bench clean

all: build

# Install the Debian packages that are missing (needs root, as on CI).
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  command -v node >/dev/null && command -v npm >/dev/null && \
	    missing=$$(echo $$missing | tr ' ' '\n' | grep -vx -e nodejs -e npm | tr '\n' ' '); \
	fi; \
	if [ -n "$$(echo $$missing)" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD) -j$(JOBS)

# The Python package is installed with a plain `pip install .` into the venv.
$(VENV)/.installed: setup.py requirements-test.txt $(wildcard core/src/* core/include/* bindings/python/*/* bindings/python/*)
	@[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip >/dev/null
	$(VENV)/bin/pip install -q . -r requirements-test.txt
	@touch $@

venv: deps $(VENV)/.installed

# The peer runtime, from npm, into an ignored folder (interop tests, bench).
workerd: deps
	@$(PYTHON) -c 'import sys; sys.path.insert(0, "bench/workerd"); import driver; b, v = driver.install(); print("workerd", v, b)' \
	  || echo "workerd could not be installed: interop tests will be skipped"

test-c: build
	cd $(BUILD) && ctest --output-on-failure

sanitize: deps
	cmake -S . -B $(BUILD_ASAN) -DDOBJ_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
	cmake --build $(BUILD_ASAN) -j$(JOBS)
	cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure

test-lua: build workerd
	$(LUA_ENV) busted --lua=lua5.4 -o utfTerminal tests/lua

test-python: venv workerd
	$(VENV)/bin/pytest tests/python -q

# Every suite; pytest runs last so its summary is the final line CI reads.
test: build venv
	@status=0; \
	$(MAKE) --no-print-directory test-c || status=1; \
	$(MAKE) --no-print-directory sanitize || status=1; \
	$(MAKE) --no-print-directory test-lua || status=1; \
	$(MAKE) --no-print-directory test-python || status=1; \
	exit $$status

demo: build venv
	@echo "== C: a class written in C, called from C =="
	./$(BUILD)/examples/c/example_counter
	@echo; echo "== Python =="
	$(VENV)/bin/python examples/demo.py
	@echo; echo "== Lua =="
	$(LUA_ENV) lua5.4 examples/demo.lua
	@echo; echo "== Lua: a native C class (token-bucket rate limiter) through libffi =="
	$(LUA_ENV) lua5.4 examples/native/demo.lua
	@echo; echo "== Python: the same native class =="
	$(VENV)/bin/python examples/native/demo.py

bench: build venv
	$(PYTHON) bench/run.py

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(VENV) *.egg-info
