"""write_project: a Workers project in a folder, for the project tests
(test_project.py, test_pyworkers.py, test_cluster.py)."""
import json
import textwrap

# A counter class named {cls} (format it) and a Worker that counts object
# "a" of COUNTER: the renamed-class tests start it before and after a rename.
COUNTER_ENTRY_OF = """\
    import dobj

    class {cls}(dobj.DurableObject):
        async def fetch(self, request):
            n = (self.ctx.storage.get("n") or 0) + 1
            self.ctx.storage.put("n", n)
            return dobj.Response(str(n))

    async def fetch(request, env, ctx):
        return await env.COUNTER.get_by_name("a").fetch(request)
    """


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
