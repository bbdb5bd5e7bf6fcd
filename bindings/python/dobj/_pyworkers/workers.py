"""``import workers`` in a project with the python_workers compatibility flag:
dobj.workers under the name Python Workers code uses (this folder is on
sys.path only while Runtime.from_config imports that project's entry)."""
from dobj.workers import *  # noqa: F401,F403
from dobj.workers import __all__  # noqa: F401
from dobj.workers import __getattr__  # noqa: F401  (unsupported names: a clear error)
