"""The installed package: typing stubs shipped, and the stubs match the module."""
import ast
import importlib.resources
import inspect

import dobj


def _stub_source():
    return importlib.resources.files("dobj").joinpath("__init__.pyi").read_text()


def test_typing_stubs_and_marker_are_installed():
    files = importlib.resources.files("dobj")
    assert files.joinpath("py.typed").is_file()
    assert "class Runtime" in _stub_source()


def test_every_name_in_the_stubs_exists():
    tree = ast.parse(_stub_source())
    checked = 0
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        assert hasattr(dobj, node.name), f"dobj.{node.name} is in the .pyi but not in the module"
        cls = getattr(dobj, node.name)
        for item in node.body:
            names = []
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = [item.name]
            elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                names = [item.target.id]
            for name in names:
                if name.startswith("__") or inspect.isclass(cls) and issubclass(cls, BaseException):
                    continue
                if name in ("ctx", "env") and cls in (dobj.DurableObject, dobj.WorkerEntrypoint):
                    continue  # instance attributes set by __init__
                if name in ("url", "method", "body", "status") and cls in (dobj.Request, dobj.Response):
                    continue  # instance attributes
                assert hasattr(cls, name), f"dobj.{node.name}.{name} is in the .pyi but not in the module"
                checked += 1
    assert checked > 40


def test_public_names():
    for name in ("Runtime", "Namespace", "DurableObjectId", "Stub", "Request", "Response",
                 "Headers", "Error", "InvalidIdError", "DurableObject"):
        assert name in dobj.__all__ and hasattr(dobj, name)
    assert issubclass(dobj.InvalidIdError, dobj.Error)
    assert issubclass(dobj.InvalidIdError, ValueError)
