"""``pyodide.ffi`` for a project with the python_workers compatibility flag:
``to_js`` / ``to_py`` convert between Python values and the values dobj
stores (there is no JavaScript heap), ``JsProxy`` is the base of what storage
reads return, ``JsMap`` what ``to_js`` makes of a dict (stored as a Map),
``JsException`` is dobj.Error."""
from dobj.workers import JsException, JsMap, JsProxy, to_js, to_py  # noqa: F401

__all__ = ["to_js", "to_py", "JsProxy", "JsMap", "JsException"]
