"""Build the dobj Python package: the C extension dobj._dobj compiled from the
same core sources as CMake (core/src/*.c), plus the pure-Python layer."""
import glob
import os

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def rel(*parts):
    return os.path.join(*parts)


core_sources = sorted(glob.glob(rel("core", "src", "*.c")))
if not core_sources:
    raise SystemExit("core/src/*.c not found: run setup.py from the repository root")

ext = Extension(
    "dobj._dobj",
    sources=[rel("bindings", "python", "src", "_dobj.c")] + core_sources,
    include_dirs=[rel("core", "include"), rel("core", "src"), "/usr/include/x86_64-linux-gnu"],
    libraries=["crypto", "sqlite3", "ffi", "dl", "m"],
    extra_compile_args=["-std=gnu11", "-fvisibility=hidden", "-Wall", "-Wextra",
                        "-Wno-missing-field-initializers", "-Wno-cast-function-type", "-O2"],
)

setup(
    name="dobj",
    version="0.1.0",
    description="Cloudflare-style Durable Objects as a native SDK (C core, Python and Lua bindings)",
    packages=["dobj"],
    package_dir={"dobj": rel("bindings", "python", "dobj")},
    package_data={"dobj": ["py.typed", "*.pyi"]},
    ext_modules=[ext],
    python_requires=">=3.9",
)
