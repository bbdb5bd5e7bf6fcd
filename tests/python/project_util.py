"""write_project: a Workers project in a folder, for the project tests
(test_project.py, test_pyworkers.py)."""
import json
import textwrap


def write_project(d, entry, config=None, *, name=None, flags=(), main="src/entry.py"):
    """A project in folder d: wrangler.toml (``config``, else worker ``name``
    (default: the folder's) with a COUNTER binding of Counter and the
    compatibility ``flags``) and ``main`` holding ``entry`` (dedented; None:
    no entry file).  Returns d."""
    d.mkdir(parents=True, exist_ok=True)
    if config is None:
        config = textwrap.dedent(f"""\
            name = "{name or d.name}"
            main = "{main}"
            compatibility_flags = {json.dumps(list(flags))}
            [[durable_objects.bindings]]
            name = "COUNTER"
            class_name = "Counter"
            [[migrations]]
            tag = "v1"
            new_sqlite_classes = ["Counter"]
            """)
    (d / "wrangler.toml").write_text(config)
    if entry is not None:
        (d / main).parent.mkdir(parents=True, exist_ok=True)
        (d / main).write_text(textwrap.dedent(entry))
    return d
