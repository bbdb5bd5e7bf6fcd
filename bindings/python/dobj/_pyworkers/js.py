"""``import js`` in a project with the python_workers compatibility flag: a
clear error (dobj runs Python only; JavaScript objects are out of scope)."""
from dobj.workers import _no_js

raise _no_js()
