"""``pyodide`` for a project with the python_workers compatibility flag: only
``pyodide.ffi`` (to_js, to_py), on dobj.workers; see docs/python.md."""
