"""``import asgi`` in a project with the python_workers compatibility flag:
``asgi.fetch(app, request, env)`` runs an ASGI app (FastAPI...) on dobj."""
from dobj.workers import asgi_fetch as fetch  # noqa: F401

__all__ = ["fetch"]
