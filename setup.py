"""The C extension dobj._dobj; the package metadata is in pyproject.toml (PEP 621).

The extension is compiled from every C file of core/src and bindings/python/src:
the same folders CMake globs (CMakeLists.txt), so a file added to or renamed in
either folder needs no edit here.  `make check-sources` checks that the
rockspec, which must name its files, lists the same ones.

Environment (the Makefile sets them; a plain `pip install .` needs neither):
  DOBJ_WERROR=1    add -Werror (CI and development builds, as CMake's DOBJ_WERROR)
  DOBJ_SANITIZE=1  build with ASan and UBSan, in .build-py-asan so the objects
                   never mix with the plain build's in .build-py
"""
import glob
import os
import shutil
import subprocess

from setuptools import Extension, setup


def sources(folder, pattern="*.c"):
    # Relative paths: setuptools refuses absolute ones in an sdist.
    return sorted(glob.glob(os.path.join(folder, pattern)))


def pkg_config(packages):
    """Include and library folders of the C libraries, from pkg-config when it
    knows them (a libffi outside the compiler's default folders, a Homebrew
    OpenSSL); otherwise the compiler's defaults are enough (Debian's ffi.h is in
    the multiarch include folder, which gcc and clang search)."""
    include_dirs, library_dirs = [], []
    if shutil.which("pkg-config"):
        for pkg in packages:
            try:
                out = subprocess.run(["pkg-config", "--cflags-only-I", "--libs-only-L", pkg],
                                     check=True, capture_output=True, text=True).stdout.split()
            except subprocess.CalledProcessError:
                continue
            include_dirs += [f[2:] for f in out if f.startswith("-I") and f[2:] not in include_dirs]
            library_dirs += [f[2:] for f in out if f.startswith("-L") and f[2:] not in library_dirs]
    return include_dirs, library_dirs


core_sources = sources("core/src")
binding_sources = sources("bindings/python/src")
if not core_sources or not binding_sources:
    raise SystemExit("core/src/*.c or bindings/python/src/*.c not found: "
                     "build from the repository root or from the sdist")

include_dirs, library_dirs = pkg_config(["libffi", "libcrypto", "sqlite3", "libpq",
                                          "libmicrohttpd"])


def have_header(name):
    """Is the C header `name` in an include folder the compiler searches
    (or one pkg-config gave)?"""
    folders = include_dirs + ["/usr/include", "/usr/local/include"]
    try:
        arch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True).stdout
        if arch.strip():
            folders.append(f"/usr/include/{arch.strip()}")
    except OSError:
        pass
    return any(os.path.exists(os.path.join(d, name)) for d in folders)


# The server of `dobj dev` (core/src/server.c, dobj/server.h): libmicrohttpd
# and wslay (Debian: libmicrohttpd-dev libwslay-dev).  Without them the
# extension builds, and `dobj dev` says to use --server uvicorn.
server_macros, server_libraries = [], []
if have_header("microhttpd.h"):
    server_macros.append(("DOBJ_HAVE_MHD", None))
    server_libraries.append("microhttpd")
    if have_header("wslay/wslay.h"):
        server_macros.append(("DOBJ_HAVE_WSLAY", None))
        server_libraries.append("wslay")
    else:
        print("warning: wslay/wslay.h not found (apt install libwslay-dev): "
              "dobj dev will not serve WebSockets")
else:
    print("warning: microhttpd.h not found (apt install libmicrohttpd-dev libwslay-dev): "
          "dobj dev needs --server uvicorn")
compile_args = ["-std=gnu11", "-fvisibility=hidden", "-Wall", "-Wextra",
                "-Wno-missing-field-initializers", "-Wno-cast-function-type"]
link_args = []
build_base = ".build-py"
if os.environ.get("DOBJ_WERROR") == "1":
    compile_args.append("-Werror")
if os.environ.get("DOBJ_SANITIZE") == "1":
    compile_args += ["-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                     "-fno-omit-frame-pointer", "-O1", "-g"]
    link_args += ["-fsanitize=address,undefined"]
    build_base = ".build-py-asan"

ext = Extension(
    "dobj._dobj",
    sources=binding_sources + core_sources,
    depends=sources("bindings/python/src", "*.h") + sources("core/src", "*.h")
    + sources("core/include", "*.h") + sources("core/include/dobj", "*.h"),
    include_dirs=["bindings/python/src", "core/include", "core/src"] + include_dirs,
    library_dirs=library_dirs,
    libraries=["crypto", "sqlite3", "pq", "ffi", "dl", "m"] + server_libraries,
    define_macros=server_macros,
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

setup(ext_modules=[ext], options={"build": {"build_base": build_base}})
