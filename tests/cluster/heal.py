"""Checks of the fault test (fault.py) beyond the history's consistency: how
long each fault takes to heal, that every resumed paused node logged its lost
lease, and that Python and Lua incarnations read each other's lists.

Records are node.py's / lua_node.lua's JSON lines; an incarnation's name
starts with the name of the node run that holds it ("n1r2-py-...",
"l2r1-lua-3"), so the harness knows which objects a fault affects: those
whose latest acknowledged operation before the fault came from an
incarnation on the faulted node run (every object, for PostgreSQL).

A fault has healed on an object at its first acknowledged append after the
fault, by another incarnation than the one the fault hit, completed (t1)
after the fault.  Measured from the fault (SIGKILL, SIGSTOP), or for
PostgreSQL from its restart (nothing can be served while it is down).
"""


def run_of(inc):
    """The node run an incarnation lives on ("n1r2-py-ab12" -> "n1r2")."""
    return inc.split("-", 1)[0] if inc else None


def last_incarnations(log, before):
    """{object: incarnation} of each object's latest acknowledged operation
    whose handler ended before `before`."""
    last = {}
    for r in list(log):
        if r.get("out") == "ok" and r["th"] < before:
            k = r["obj"]
            if k not in last or r["th"] > last[k][0]:
                last[k] = (r["th"], r["inc"])
    return {k: inc for k, (_, inc) in last.items()}


def affected(log, kind, victim_run, at, objects):
    """{object: incarnation hit (None: any)} a fault at time `at` affects."""
    if kind == "pg":
        return {k: None for k in range(objects)}
    return {k: inc for k, inc in last_incarnations(log, at).items() if run_of(inc) == victim_run}


def heal_time(log, obj, hit_inc, since, first=0):
    """Seconds from `since` to the first acknowledged append on `obj` by
    another incarnation than `hit_inc` completed after `since`; None if
    none yet.  Records before index `first` were logged before the fault."""
    best = None
    for r in log[first:]:
        if (r.get("op") == "append" and r.get("out") == "ok" and r["obj"] == obj and
                r["t1"] > since and r["inc"] != hit_inc):
            if best is None or r["t1"] < best:
                best = r["t1"]
    return None if best is None else best - since


def healed(log, fault):
    """Has every object the fault affects healed?"""
    return all(heal_time(log, k, inc, fault["since"], fault["first"]) is not None
               for k, inc in fault["objects"].items())


def check_heal(log, faults, bound):
    """Problems (strings) for faults that did not heal within `bound`
    seconds, and the figures: {kind: [heal seconds, ...]}."""
    problems, figures = [], {}
    for f in faults:
        for k, inc in sorted(f["objects"].items()):
            t = heal_time(log, k, inc, f["since"], f["first"])
            if t is not None:
                figures.setdefault(f["kind"], []).append(t)
            if t is None or t > bound:
                problems.append(
                    f"{f['kind']} of {f['victim']} at +{f['rel']:.1f} s: list{k} "
                    + (f"healed after {t:.2f} s" if t is not None else "never healed")
                    + f", over the bound of {bound:.1f} s (TTL + grace + 2 s)")
    return problems, figures


def check_paused_logged(log, pauses):
    """Every node run resumed after a pause past its lease logged (on its
    stderr: the core's log hook, through Python's "dobj" logger or the Lua
    binding) that it lost its lease or could not renew it, or that a write
    of it was fenced, after it resumed."""
    problems = []
    for run, t0, t1 in pauses:
        if not any(r.get("stderr") == run and r["t"] >= t1 and
                   any(w in r["line"] for w in ("lost its lease", "renew its lease", "fenced"))
                   for r in list(log)):
            problems.append(f"{run} resumed after a pause of {t1 - t0:.1f} s and logged "
                            "neither a lost lease nor a fenced write")
    return problems


def cross_language(log):
    """(reads by Python incarnations that saw items a Lua incarnation
    appended, reads by Lua incarnations that saw items a Python incarnation
    appended): who appended an item is the incarnation that acknowledged
    its append."""
    lang = {}
    for r in list(log):
        if r.get("op") == "append" and r.get("out") == "ok":
            lang[r["tok"]] = "lua" if "-lua-" in r["inc"] else "py"
    py_saw_lua = lua_saw_py = 0
    for r in list(log):
        if r.get("op") != "read" or r.get("out") != "ok" or not r.get("val"):
            continue
        langs = {lang.get(tok) for tok in r["val"]}
        if "-lua-" in r["inc"] and "py" in langs:
            lua_saw_py += 1
        elif "-py-" in r["inc"] and "lua" in langs:
            py_saw_lua += 1
    return py_saw_lua, lua_saw_py
