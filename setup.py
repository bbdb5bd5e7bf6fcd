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

# Every C file of the binding (the module, the value mapping, storage...).
binding_sources = sorted(glob.glob(rel("bindings", "python", "src", "*.c")))

ext = Extension(
    "dobj._dobj",
    sources=binding_sources + core_sources,
    depends=sorted(glob.glob(rel("bindings", "python", "src", "*.h")) + glob.glob(rel("core", "src", "*.h"))
                   + glob.glob(rel("core", "include", "*.h")) + glob.glob(rel("core", "include", "dobj", "*.h"))),
    include_dirs=[rel("bindings", "python", "src"), rel("core", "include"), rel("core", "src"), "/usr/include/x86_64-linux-gnu"],
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
