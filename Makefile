# dobj — the two commands a newcomer needs: `make demo` and `make test`.
# Both install what they need on a fresh Debian 12 machine (apt as root,
# a Python venv in .venv), then build with CMake (core, C tests, Lua module)
# and pip (the Python extension, from the same core sources).
#
# Development builds turn warnings into errors (DOBJ_WERROR); a user's own
# `cmake` or `pip install .` does not.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VENV_ASAN := .venv-asan
BUILD := build
BUILD_ASAN := build-asan
BUILD_TSAN := build-tsan
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
DEB_PACKAGES := build-essential pkg-config python3-dev python3-venv \
	cmake libssl-dev libffi-dev libsqlite3-dev sqlite3 \
	lua5.4 liblua5.4-dev lua-busted luarocks nodejs npm \
	libmicrohttpd-dev libwslay-dev curl libpq-dev postgresql
# What only the test suites need: Debian's Chromium for the chat page's
# browser test (tests/python/test_chat_browser.py, driven over DevTools).
TEST_DEB_PACKAGES := chromium
test test-python test-pythons test-dist sanitize sanitize-python: DEB_PACKAGES += $(TEST_DEB_PACKAGES)
# $(call lua_paths,DIR): DIR holds dobj/test.lua (require "dobj.test") of
# the module under test: the CMake build, build-asan or the LuaRocks tree.
lua_paths = LUA_PATH="$(1)/?.lua;$(CURDIR)/tests/lua/?.lua;$(CURDIR)/examples/lua/?.lua;;"
LUA_PATHS := $(call lua_paths,$(CURDIR)/$(BUILD))
LUA_ENV := LUA_CPATH="$(CURDIR)/$(BUILD)/?.so;;" $(LUA_PATHS)
BUSTED := busted --lua=lua5.4 -o utfTerminal

# The Python extension is rebuilt when any of these change.
PY_DEPS := pyproject.toml setup.py MANIFEST.in requirements-test.txt \
	$(wildcard core/src/* core/include/* core/include/dobj/* bindings/python/src/* bindings/python/dobj/*)
# pip installs the package with its `test` extra, pinned by requirements-test.txt.
PIP_INSTALL = pip install -q '.[test]' -c requirements-test.txt

# Sanitizers: the interpreters (python, lua5.4) are not instrumented, so the
# ASan runtime is preloaded into them.  Leak detection stays off for Python
# (CPython keeps memory until exit); Lua frees everything, so LeakSanitizer
# runs there.  UBSan findings abort (-fno-sanitize-recover), so they fail.
SAN_PRELOAD = LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)"
SAN_UBSAN := UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# Every Python in requires-python is tested by `make test-pythons`: the oldest
# and the newest.  Found in pyenv's folder or on PATH; a missing one is skipped
# with a message.
PY_VERSIONS ?= 3.10 3.13
PYENV_ROOT ?= $(HOME)/.pyenv
python_for = $(or $(lastword $(sort $(wildcard $(PYENV_ROOT)/versions/$(1).*/bin/python$(1)))),$(shell command -v python$(1) 2>/dev/null))
PY_FOUND := $(foreach v,$(PY_VERSIONS),$(if $(call python_for,$(v)),$(v)))
PY_MISSING := $(filter-out $(PY_FOUND),$(PY_VERSIONS))

ROCK_TREE := $(BUILD)/rock

.PHONY: all deps build venv workerd test test-c test-lua test-python test-cluster \
	sanitize sanitize-build sanitize-c sanitize-lua sanitize-python tsan \
	test-pythons dist test-dist rock test-rock check-sources rockspec \
	demo demo-lua-dev bench fuzz clean

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
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDOBJ_WERROR=ON >/dev/null
	cmake --build $(BUILD) -j$(JOBS)

# The Python package is installed with a plain `pip install .` into the venv.
$(VENV)/.installed: $(PY_DEPS)
	@[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip >/dev/null
	DOBJ_WERROR=1 $(VENV)/bin/$(PIP_INSTALL)
	@touch $@

venv: deps $(VENV)/.installed

# The peer runtime, from npm, into an ignored folder (interop tests, bench).
workerd: deps
	@$(PYTHON) -c 'import sys; sys.path.insert(0, "bench/workerd"); import driver; b, v = driver.install(); print("workerd", v, b)' \
	  || echo "workerd could not be installed: interop tests will be skipped"

test-c: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

# ---- sanitizers: C, Lua and Python suites under ASan + UBSan ----------------

sanitize-build: deps
	cmake -S . -B $(BUILD_ASAN) -DDOBJ_SANITIZE=ON -DDOBJ_WERROR=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
	cmake --build $(BUILD_ASAN) -j$(JOBS)

sanitize-c: sanitize-build
	cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1 $(SAN_UBSAN) ctest --output-on-failure -j$(JOBS)

# The Lua module and the test libraries of build-asan, loaded by lua5.4.
# intercept_tls_get_addr=0: since dobj.so links libmicrohttpd (and so gnutls),
# LeakSanitizer's exit-time scan of the dynamic TLS blocks of dlopen'ed
# libraries read a bogus block ("DTLS 6 at 0x67-...") and crashed its tracer
# (signal 11) at the exit of some busted runs (tests/lua/test_helpers_spec.lua's
# child runs).  Leaks are still reported without the interception, a leak in a
# dlopen'ed library included.
sanitize-lua: sanitize-build workerd
	$(SAN_PRELOAD) ASAN_OPTIONS=detect_leaks=1:intercept_tls_get_addr=0 $(SAN_UBSAN) \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/sanitize/lsan.supp:print_suppressions=0 \
	  LUA_CPATH="$(CURDIR)/$(BUILD_ASAN)/?.so;;" $(call lua_paths,$(CURDIR)/$(BUILD_ASAN)) $(BUSTED) tests/lua

# The extension built with DOBJ_SANITIZE=1 into its own venv; PYTHONMALLOC=malloc
# so that ASan sees every Python object (a use-after-free of a key or a value).
$(VENV_ASAN)/.installed: $(PY_DEPS)
	@[ -x $(VENV_ASAN)/bin/python ] || $(PYTHON) -m venv $(VENV_ASAN)
	$(VENV_ASAN)/bin/pip install -q --upgrade pip >/dev/null
	DOBJ_WERROR=1 DOBJ_SANITIZE=1 $(VENV_ASAN)/bin/$(PIP_INSTALL)
	@touch $@

sanitize-python: deps $(VENV_ASAN)/.installed sanitize-build workerd
	$(SAN_PRELOAD) ASAN_OPTIONS=detect_leaks=0 $(SAN_UBSAN) PYTHONMALLOC=malloc \
	  $(VENV_ASAN)/bin/python -m pytest tests/python -q -p no:cacheprovider

sanitize:
	@status=0; \
	$(MAKE) --no-print-directory sanitize-c || status=1; \
	$(MAKE) --no-print-directory sanitize-lua || status=1; \
	$(MAKE) --no-print-directory sanitize-python || status=1; \
	exit $$status

# ThreadSanitizer over the C cluster tests (tests/c/test_cluster*.c), the ones
# with threads: a node's network thread, committer, lease keeper, compactor and
# activator beside its runtime, and two
# runtimes on two threads calling each other (test_cluster_route).  The first
# race fails the run (halt_on_error).  About 25 s of tests after the build,
# so `make test` runs it.  The interpreters are left out: TSan cannot be
# preloaded into an uninstrumented python or lua5.4 the way ASan is.
TSAN_TESTS = $(patsubst tests/c/%.c,%,$(wildcard tests/c/test_cluster*.c))
tsan: deps
	cmake -S . -B $(BUILD_TSAN) -DDOBJ_TSAN=ON -DDOBJ_WERROR=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
	cmake --build $(BUILD_TSAN) -j$(JOBS) --target $(TSAN_TESTS)
	cd $(BUILD_TSAN) && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	  ctest --output-on-failure -R '^c_test_cluster'

# ---- the suites --------------------------------------------------------------

test-lua: build workerd
	$(LUA_ENV) $(BUSTED) tests/lua

test-python: venv workerd
	$(VENV)/bin/pytest tests/python -q

# The Python suite on the oldest and the newest Python of requires-python,
# each in its own venv (.venv-3.10, .venv-3.13).
.venv-%/.installed: $(PY_DEPS)
	@[ -x .venv-$*/bin/python ] || $(call python_for,$*) -m venv .venv-$*
	.venv-$*/bin/pip install -q --upgrade pip >/dev/null
	DOBJ_WERROR=1 .venv-$*/bin/$(PIP_INSTALL)
	@touch $@

test-pythons: deps build workerd
	@status=0; \
	for v in $(PY_MISSING); do echo "test-pythons: python$$v not found (pyenv install $$v): skipped"; done; \
	for v in $(PY_FOUND); do \
	  echo "== Python $$v =="; \
	  $(MAKE) --no-print-directory .venv-$$v/.installed && \
	  .venv-$$v/bin/python -m pytest tests/python -q -p no:cacheprovider || status=1; \
	done; exit $$status

# ---- packages ------------------------------------------------------------------

# An sdist and a wheel in dist/, made by `python -m build` as a user would.
dist: venv
	@$(VENV)/bin/pip show -q build 2>/dev/null || $(VENV)/bin/pip install -q build
	rm -rf dist
	$(VENV)/bin/python -m build -o dist . >/dev/null
	@ls dist

# The wheel (with its `test` extra, which takes in `dev`) installed into a
# fresh venv passes the Python suite; the sdist
# holds every core and binding source and header.
test-dist: dist build workerd
	rm -rf $(BUILD)/venv-dist
	$(PYTHON) -m venv $(BUILD)/venv-dist
	$(BUILD)/venv-dist/bin/pip install -q "$$(ls dist/dobj-*.whl)[test]" -c requirements-test.txt
	@missing=$$(comm -23 <(git ls-files core bindings/python/src | sort) \
	  <(tar tzf dist/dobj-*.tar.gz | sed 's|^[^/]*/||' | sort)); \
	  if [ -n "$$missing" ]; then echo "sdist lacks: $$missing"; exit 1; fi
	cd $(BUILD)/venv-dist && bin/python -c 'import dobj; assert "/venv-dist/" in dobj.__file__, dobj.__file__'
	$(BUILD)/venv-dist/bin/pytest tests/python -q -p no:cacheprovider

# The rockspec lists its files (LuaRocks has no globs): `make rockspec`
# rewrites the lists from the folders, `make check-sources` checks them.
rockspec:
	$(PYTHON) tools/sources.py --write

check-sources:
	$(PYTHON) tools/sources.py --check

# `luarocks make` as a user runs it, into a scratch tree (from a copy of the
# sources, since LuaRocks writes its objects next to them); then the Lua suite
# runs against the installed module.
rock: deps check-sources
	rm -rf $(ROCK_TREE) && mkdir -p $(ROCK_TREE)/src
	git ls-files -z --cached --others --exclude-standard core bindings/lua dobj-scm-1.rockspec \
	  | xargs -0 cp --parents -t $(ROCK_TREE)/src
	cd $(ROCK_TREE)/src && luarocks --lua-version=5.4 make --tree $(CURDIR)/$(ROCK_TREE) dobj-scm-1.rockspec >/dev/null

# The suite's native test libraries are looked up next to dobj.so: linked
# into the scratch tree from the CMake build.
test-rock: rock build workerd
	ln -sf $(addprefix $(CURDIR)/,$(wildcard $(BUILD)/lib*.so)) $(ROCK_TREE)/lib/lua/5.4/
	LUA_CPATH="$(CURDIR)/$(ROCK_TREE)/lib/lua/5.4/?.so;$(CURDIR)/$(BUILD)/?.so;;" $(call lua_paths,$(CURDIR)/$(ROCK_TREE)/share/lua/5.4) \
	  lua5.4 -e 'local d = require "dobj"; assert(package.searchpath("dobj", package.cpath):find("/rock/", 1, true)); assert(package.searchpath("dobj.test", package.path):find("/rock/", 1, true))'
	LUA_CPATH="$(CURDIR)/$(ROCK_TREE)/lib/lua/5.4/?.so;$(CURDIR)/$(BUILD)/?.so;;" $(call lua_paths,$(CURDIR)/$(ROCK_TREE)/share/lua/5.4) $(BUSTED) tests/lua
	$(ROCK_TREE)/bin/dobj-lua --help | grep -q '^usage: dobj-lua dev'

# Every suite: C, the three languages under the sanitizers, Lua from the CMake
# build and from `luarocks make`, Python on the oldest and newest versions it
# supports, then on the default one.  pytest runs last so its summary is the
# final line CI reads.
# The cluster fault test (tests/cluster/fault.py): a real PostgreSQL, three
# node processes (two Python, one Lua: LUA_ENV finds this build's dobj.so),
# kills, pauses and PostgreSQL restarts, then the history and the heal times
# are checked.  `make test` runs SEEDS=2 (~50 s); `make test-cluster SEEDS=50`.
SEEDS ?= 2
test-cluster: build venv
	$(LUA_ENV) $(VENV)/bin/python tests/cluster/fault.py --seeds $(SEEDS)

test: build venv
	@status=0; \
	$(MAKE) --no-print-directory test-c || status=1; \
	$(MAKE) --no-print-directory sanitize || status=1; \
	$(MAKE) --no-print-directory tsan || status=1; \
	$(MAKE) --no-print-directory test-lua || status=1; \
	$(MAKE) --no-print-directory test-rock || status=1; \
	$(MAKE) --no-print-directory test-pythons || status=1; \
	$(MAKE) --no-print-directory test-cluster || status=1; \
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
	@echo; echo "== Python: dobj dev serving examples/workers/python-counter over HTTP =="
	$(VENV)/bin/python examples/workers/dev_demo.py
	@echo; echo "== Python: two dobj dev --cluster servers on one PostgreSQL (skipped without it) =="
	$(VENV)/bin/python examples/workers/cluster_demo.py
	@$(MAKE) --no-print-directory demo-lua-dev

# `dobj-lua dev` serving a Lua Workers project, two requests, then stopped.
demo-lua-dev: build
	@echo; echo "== Lua: dobj-lua dev serving examples/workers/lua-counter over HTTP =="
	examples/workers/lua-dev-demo.sh $(BUILD)/bin/dobj-lua

# The HTTP rows load the servers with wrk (Debian's package).
bench: DEB_PACKAGES += wrk
bench: build venv
	$(PYTHON) bench/run.py
	$(PYTHON) bench/ws_bench.py

# libFuzzer targets (tests/c/fuzz/fuzz_*.c) with ASan and UBSan, built by
# clang (Debian: apt-get install clang) against the whole core; each runs
# FUZZ_SECONDS on a seed corpus (tests/c/fuzz/seeds.py) kept in build-fuzz/,
# and a crash leaves its input there (crash-*) and fails the target.
FUZZ_SECONDS ?= 120
FUZZ_DIR := build-fuzz
fuzz:
	@command -v clang >/dev/null || { echo "make fuzz needs clang (apt-get install clang)"; exit 1; }
	mkdir -p $(FUZZ_DIR)
	python3 tests/c/fuzz/seeds.py $(FUZZ_DIR)/seeds
	set -e; for t in value config wire id; do \
	  clang -g -O1 -fsanitize=fuzzer,address,undefined -Icore/include -Icore/src \
	    $$(pkg-config --cflags libpq) tests/c/fuzz/fuzz_$$t.c core/src/*.c \
	    -lsqlite3 -lcrypto -lpq -lffi -ldl -lm -lpthread -o $(FUZZ_DIR)/fuzz_$$t; \
	  mkdir -p $(FUZZ_DIR)/corpus-$$t; \
	  (cd $(FUZZ_DIR) && ./fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    corpus-$$t seeds/$$t); \
	done

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_TSAN) $(VENV) $(VENV_ASAN) .venv-3.* .build-py .build-py-asan dist *.egg-info
