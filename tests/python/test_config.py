"""dobj.load_config: wrangler's configuration read by the core, on the
fixture projects in tests/config (the C and Lua suites read the same ones),
and the core's TOML / JSONC parsers checked against tomllib and json."""
import dataclasses
import datetime
import json
import math
import os
import random
import sys
from pathlib import Path

import pytest

import dobj

FIXTURES = Path(__file__).resolve().parent.parent / "config"
PROJECTS = [("project_toml", "wrangler.toml"), ("project_jsonc", "wrangler.jsonc"),
            ("project_json", "wrangler.json")]

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = None
needs_tomllib = pytest.mark.skipif(tomllib is None, reason="tomllib is Python 3.11+")


@pytest.fixture(autouse=True)
def _no_cloudflare_env(monkeypatch):
    monkeypatch.delenv("CLOUDFLARE_ENV", raising=False)


# ------------------------------------------------------------------ projects

@pytest.mark.parametrize("folder,file", PROJECTS)
def test_project_top_level(folder, file):
    d = FIXTURES / folder
    c = dobj.load_config(d)
    assert c.config_path == str(d / file)
    assert (c.env, c.name, c.worker_name) == (None, "counter", "counter")
    assert c.main == str(d / "src" / "entry.py")
    assert c.compatibility == ("2024-10-22", ("python_workers",))
    # vars from the config, overridden by .dev.vars
    assert dict(c.vars) == {"GREETING": "from dev vars", "LIMIT": 10, "FEATURES": {"beta": True},
                            "SECRET": "top-secret"}
    assert c.dev_vars_path == str(d / ".dev.vars")
    state = d / ".wrangler" / "state" / "v3" / "do"
    assert c.state_dir == str(state)
    assert c.bindings == (
        dobj.Binding("COUNTER", "Counter", "counter-Counter", str(state / "counter-Counter"), True, "counter-Counter"),
        dobj.Binding("ROOM", "ChatRoom", "counter-ChatRoom", str(state / "counter-ChatRoom"), False, "counter-Room"),
    )
    assert [m.tag for m in c.migrations] == ["v1", "v2", "v3"]
    assert c.migrations[2] == dobj.Migration("v3", (), (), (("Room", "ChatRoom"),), ("Old",))
    assert c.warnings == ()


@pytest.mark.parametrize("folder,file", PROJECTS)
def test_project_environments(folder, file):
    d = FIXTURES / folder
    s = dobj.load_config(d, env="staging")
    assert (s.env, s.name) == ("staging", "counter-staging")
    assert s.main == str(d / "src" / "entry.py")  # inherited
    assert len(s.migrations) == 3  # inherited
    assert dict(s.vars) == {"GREETING": "hi from staging", "SECRET": "staging-secret"}
    assert s.dev_vars_path == str(d / ".dev.vars.staging")
    assert [(b.binding, b.unique_key) for b in s.bindings] == [("COUNTER", "counter-staging-Counter")]
    assert s.warnings == ()

    p = dobj.load_config(d, env="production")
    assert (p.name, p.main) == ("counter-prod", str(d / "src" / "prod.py"))
    assert p.bindings == ()
    assert dict(p.vars) == {"SECRET": "top-secret", "GREETING": "from dev vars"}
    assert p.warnings == tuple(
        f'"{k}" exists at the top level, but not on "env.production".\n'
        f'This is not what you probably want, since "{k}" is not inherited by environments.\n'
        f'Please add "{k}" to "env.production".' for k in ("vars", "durable_objects"))


def test_three_formats_resolve_alike():
    def shape(c):
        d = {f.name: getattr(c, f.name) for f in dataclasses.fields(c)}
        d["vars"] = dict(c.vars)
        d["bindings"] = [dataclasses.asdict(b) for b in c.bindings]
        d["migrations"] = [dataclasses.asdict(m) for m in c.migrations]
        folder = os.path.dirname(c.config_path)
        return json.loads(json.dumps(d, default=dict).replace(folder, "<dir>"))
    for env in ("", "staging", "production"):
        got = [shape(dobj.load_config(FIXTURES / f, env=env)) for f, _ in PROJECTS]
        for g in got:
            g.pop("config_path")
        assert got[0] == got[1] == got[2]


def test_environment_from_cloudflare_env(monkeypatch):
    monkeypatch.setenv("CLOUDFLARE_ENV", "staging")
    assert dobj.load_config(FIXTURES / "project_toml").env == "staging"
    assert dobj.load_config(FIXTURES / "project_toml", env="").env is None  # the argument wins


def test_unknown_environment():
    with pytest.raises(dobj.ConfigError, match=r'No environment found in configuration with name "nope"'):
        dobj.load_config(FIXTURES / "project_toml", env="nope")
    # A config without environments: wrangler warns and uses the top level.
    c = dobj.load_config(FIXTURES / "noname", env="dev")
    assert len(c.bindings) == 2
    assert c.warnings[0].startswith('No environment found in configuration with name "dev".')


def test_which_file_wins(monkeypatch):
    assert dobj.load_config(FIXTURES / "both").name == "from-json"
    # wrangler looks each name up from the folder upwards, json first
    assert dobj.load_config(FIXTURES / "nested" / "sub" / "deeper").name == "nested-json"
    assert dobj.load_config(FIXTURES / "nested" / "sub" / "wrangler.toml").name == "nested-sub"
    monkeypatch.chdir(FIXTURES / "nested" / "sub")
    c = dobj.load_config(persist_to="state")
    assert c.name == "nested-json"
    assert c.state_dir == str(FIXTURES / "nested" / "sub" / "state" / "v3" / "do")


def test_no_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(dobj.ConfigError, match="no wrangler.json, wrangler.jsonc or wrangler.toml in"):
        dobj.load_config()
    with pytest.raises(dobj.ConfigError, match="no such file or folder"):
        dobj.load_config(tmp_path / "missing")


def test_dotenv_files():
    c = dobj.load_config(FIXTURES / "dotenv")
    assert dict(c.vars) == {"A": "from .env", "B": "from .env.local", "C": "from config"}
    c = dobj.load_config(FIXTURES / "dotenv", env="staging")
    assert dict(c.vars) == {"A": "from .env.staging", "B": "from .env.local"}


def test_worker_name_and_missing_migration():
    c = dobj.load_config(FIXTURES / "noname")
    assert c.name is None and c.worker_name == "worker"
    assert [b.unique_key for b in c.bindings] == ["worker-Alpha", "worker-Beta"]
    assert len(c.warnings) == 1
    assert c.warnings[0].startswith(
        "In your wrangler.toml file, you have configured `durable_objects` exported by this Worker "
        "(Beta), but no `migrations` for them.")
    assert 'new_classes = [ "Beta" ]' in c.warnings[0]


def test_persist_to(tmp_path):
    c = dobj.load_config(FIXTURES / "project_toml", persist_to=tmp_path)
    assert c.state_dir == str(tmp_path / "v3" / "do")
    assert c.bindings[0].storage_dir == str(tmp_path / "v3" / "do" / "counter-Counter")


def test_config_is_read_only():
    c = dobj.load_config(FIXTURES / "project_toml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.name = "x"
    with pytest.raises(TypeError):
        c.vars["GREETING"] = "x"


BAD = [
    ("syntax.toml", None, "bad/syntax.toml:3:22: unterminated string"),
    ("syntax.jsonc", None, "bad/syntax.jsonc:3:3: expected ',' or '}'"),
    ("script_name.toml", None,
     'durable_objects.bindings[0].script_name is not supported (binding "REMOTE"'),
    ("environment.jsonc", None,
     'durable_objects.bindings[1].environment is not supported (binding "ENVD"'),
    ("env_binding.toml", "staging",
     'env.staging.durable_objects.bindings[0].script_name is not supported (binding "S"'),
    ("types.toml", None, "vars must be a table, not string"),
    ("class_name.toml", None, 'durable_objects.bindings[0].class_name is required (binding "NOCLASS")'),
    ("date.toml", None, "bad/date.toml:2:22: dates and times are not supported"),
    ("dup.toml", None, 'durable_objects.bindings[1].name "X" is bound twice'),
    ("migration_tag.toml", None, "migrations[0].tag is required"),
    ("root_array.json", None, "the configuration must be an object, not array"),
    ("config.yaml", None, "a config file's name ends in .toml, .json or .jsonc"),
    ("table_twice.toml", None, "bad/table_twice.toml:4:2: the table a is defined twice"),
]


@pytest.mark.parametrize("file,env,message", BAD, ids=[b[0] for b in BAD])
def test_bad_files(file, env, message):
    with pytest.raises(dobj.ConfigError) as e:
        dobj.load_config(FIXTURES / "bad" / file, env=env)
    assert message in str(e.value)
    assert str(FIXTURES / "bad" / file) in str(e.value)
    assert isinstance(e.value, dobj.Error) and isinstance(e.value, ValueError)


def test_bad_arguments():
    with pytest.raises(TypeError):
        dobj.load_config(123)
    with pytest.raises(ValueError, match="NUL"):
        dobj.load_config("a\0b")


# ------------------------------------------------------------ differential

def same(a, b):
    """Equal trees, types included (1 is not 1.0 is not True), NaN == NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def has_unsupported(v):
    """What the core refuses on purpose: dates and times, integers beyond 64 bits."""
    if isinstance(v, (datetime.date, datetime.time)):
        return True
    if isinstance(v, int) and not isinstance(v, bool):
        return not -2**63 <= v < 2**63
    if isinstance(v, dict):
        return any(has_unsupported(x) for x in v.values())
    if isinstance(v, list):
        return any(has_unsupported(x) for x in v)
    return False


def check_toml(text):
    """The core agrees with tomllib on `text` (bytes): the same tree, or
    both refuse.  Returns whether it parsed."""
    try:
        want = tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        want = None
    try:
        got = dobj._dobj._config_parse(text, "toml", "t.toml")
    except dobj.ConfigError:
        got = None
    if want is not None and has_unsupported(want):
        assert got is None, text
        return False
    assert (want is None) == (got is None), (text, want, got)
    if want is not None:
        assert same(got, want), (text, want, got)
    return want is not None


TOML_FILES = sorted(FIXTURES.rglob("*.toml"))


@needs_tomllib
@pytest.mark.parametrize("path", TOML_FILES, ids=[str(p.relative_to(FIXTURES)) for p in TOML_FILES])
def test_toml_fixture_matches_tomllib(path):
    check_toml(path.read_bytes())


TOML_SNIPPETS = [
    b'a = 1\n', b'a.b.c = 1\na.b.d = 2\n', b'[a]\nb.c = 1\n[a.b.d]\ne = 2\n',
    b'[a.b.c]\n[a]\nb.d = 1\n', b'[a]\nb.c = 1\n[a.b]\n', b'[[a]]\nb = 1\n[[a]]\n[a.c]\nd = 2\n',
    b'[[a.b]]\n[a]\nc = 1\n', b'[a]\n[[a.b]]\n[[a.b]]\nx = 1\n', b'a = [1, [2, [3]], {b = 1}]\n',
    b'a = {b = {c = 1}, d.e = 2}\n', b'a = {b = 1}\n[a.c]\n', b'a = [{}]\n[[a]]\n',
    b'"a.b" = 1\n\'c d\' = 2\n"" = 3\n', b'a = """\n\\\n  x"""\n', b"a = '''''x'''''\n",
    b'a = "\\u00e9\\U0010FFFF"\n', b'a = 1_000\nb = 0xff\nc = 0o17\nd = 0b11\ne = +1\nf = -0\n',
    b'a = 1e10\nb = 1.5E-3\nc = -0.0\nd = +inf\ne = -nan\nf = 3.0e+2\n', b'a=1#c\n',
    b'a = 1\r\nb = 2\r\n', b'a = "x"\r\n# c\r\n', b'a = true\nb = false\n', b'a = [\n]\n',
    b'a = [ # c\n 1 # d\n , # e\n]\n', b'[ a . b ]\n[ [ c ] ]\n', b'[[ c ]]\n', b'a = 1\n[b]\n[c.d]\n',
    b'x.y = 1\n[x.z]\n', b'x.y = 1\n[x]\n', b'[x]\ny.z = 1\n[x.y]\n', b'a = 1979-05-27\n',
    b'a = 9223372036854775807\nb = -9223372036854775808\n', b'a = 0x7FFFFFFFFFFFFFFF\n',
    b'a = 00\n', b'a = 01.5\n', b'a = 1.\n', b'a = .5\n', b'a = 1e\n', b'a = 0x\n', b'a = _1\n',
    b'a = "\\q"\n', b'a = "a\nb"\n', b'a = """a\\ b"""\n', b'a = {b = 1,}\n', b'a = {\n}\n',
    b'a = [1,,2]\n', b'a = [,]\n', b'[a]]\n', b'[]\n', b'a = \n', b'= 1\n', b'a b = 1\n',
    b'a = 1\na = 2\n', b'[a]\n[a]\n', b'a = "\x7f"\n', b'# \x00\n', b'a = "\xff"\n', b'a = inf1\n',
    b'a = "\\uD800"\n', b'a.b = 1\na = 2\n', b'a = """""""\n', b'a = """ """"\n', b'a = 1 # \r\n',
    b'a = 1\rb = 2\n', b'\xef\xbb\xbfa = 1\n', b'a = tru\n', b'a = falsey\n', b'a = 1__0\n',
]


@needs_tomllib
@pytest.mark.parametrize("text", TOML_SNIPPETS)
def test_toml_snippet_matches_tomllib(text):
    check_toml(text)


def random_toml(rng, depth=0):
    """A random TOML document written the ways wrangler configs are."""
    def key():
        return rng.choice(["a", "b", "name", "k-1", "K_2", '"q k"', "'lit'", '"é"', "x.y", '"a.b"'])

    def scalar():
        return rng.choice([
            lambda: str(rng.randint(-10**12, 10**12)), lambda: hex(rng.randint(0, 2**40)),
            lambda: "0o" + format(rng.randint(0, 999), "o"), lambda: "0b" + format(rng.randint(0, 99), "b"),
            lambda: repr(rng.uniform(-1e6, 1e6)), lambda: rng.choice(["inf", "-inf", "nan", "1e300", "5e-324"]),
            lambda: rng.choice(["true", "false"]), lambda: json.dumps(rng.choice(["", "x", "é\u00e9", "a\"b", "\t\\"])),
            lambda: "'" + rng.choice(["", "raw \\n", "C:\\dir"]) + "'",
            lambda: '"""\n' + rng.choice(["a\nb", "c\\\n   d", 'q""']) + '"""',
            lambda: "'''" + rng.choice(["x\ny", "''z"]) + "'''",
            lambda: "1_000_000", lambda: "3.14_15",
        ])()

    def value(d):
        r = rng.random()
        if r < 0.15 and d < 3:
            return "[" + ", ".join(value(d + 1) for _ in range(rng.randint(0, 3))) + rng.choice(["", ","]) + "]"
        if r < 0.25 and d < 3:
            return "{" + ", ".join(f"{key()} = {value(d + 1)}" for _ in range(rng.randint(0, 3))) + "}"
        return scalar()

    lines = []
    for _ in range(rng.randint(1, 12)):
        r = rng.random()
        if r < 0.15:
            lines.append(f"[{key()}]")
        elif r < 0.25:
            lines.append(f"[[{key()}]]")
        elif r < 0.3:
            lines.append("# comment " + rng.choice(["", "é", "#"]))
        else:
            lines.append(f"{key()} = {value(0)}" + rng.choice(["", " # c"]))
    return ("\n".join(lines) + rng.choice(["", "\n", "\r\n"])).encode()


@needs_tomllib
def test_generated_toml_matches_tomllib():
    rng = random.Random(20261201)
    parsed = 0
    for _ in range(3000):
        text = random_toml(rng)
        parsed += check_toml(text)
        # and a mutation of it
        b = bytearray(text)
        if b:
            i = rng.randrange(len(b))
            op = rng.random()
            if op < 0.4:
                b[i] = rng.choice(b'[]{}=.,"\'#\n \\_0xe+-')
            elif op < 0.7:
                b.insert(i, rng.choice(b'[]{}=.,"\'#\n \\_'))
            else:
                del b[i:]
            check_toml(bytes(b))
    assert parsed > 500  # the generator writes mostly valid TOML


# JSON: what `json` accepts, the core reads alike (JSONC is a superset).

_FAILED = object()


def check_json(text):
    try:
        want = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except (ValueError, RecursionError):
        want = _FAILED
    try:
        got = dobj._dobj._config_parse(text, "jsonc", "t.json")
    except dobj.ConfigError:
        got = _FAILED
    if want is not _FAILED and has_surrogate(want):
        assert got is _FAILED  # a lone surrogate: refused on purpose (not UTF-8)
        return False
    if want is not _FAILED:
        assert got is not _FAILED and same(got, want), (text, want, got)
    return want is not _FAILED


def has_surrogate(v):
    if isinstance(v, str):
        return any(0xD800 <= ord(ch) <= 0xDFFF for ch in v)
    if isinstance(v, dict):
        return any(has_surrogate(k) or has_surrogate(x) for k, x in v.items())
    if isinstance(v, list):
        return any(has_surrogate(x) for x in v)
    return False


JSON_FILES = sorted(p for p in FIXTURES.rglob("*.json"))


@pytest.mark.parametrize("path", JSON_FILES, ids=[str(p.relative_to(FIXTURES)) for p in JSON_FILES])
def test_json_fixture_matches_json(path):
    assert check_json(path.read_bytes())


def test_jsonc_fixture_is_the_json_fixture():
    jsonc = dobj._dobj._config_parse((FIXTURES / "project_jsonc" / "wrangler.jsonc").read_bytes(), "jsonc")
    plain = json.loads((FIXTURES / "project_json" / "wrangler.json").read_bytes())
    assert same(jsonc, plain)


def random_json(rng, d=0):
    r = rng.random()
    if r < 0.2 and d < 4:
        return [random_json(rng, d + 1) for _ in range(rng.randint(0, 4))]
    if r < 0.4 and d < 4:
        return {rng.choice(["a", "b", "é", "", "k\"", "\u2028", "\U0001F600"]): random_json(rng, d + 1)
                for _ in range(rng.randint(0, 4))}
    return rng.choice([
        lambda: rng.randint(-2**70, 2**70), lambda: rng.randint(-1000, 1000), lambda: rng.uniform(-1e300, 1e300),
        lambda: rng.random(), lambda: None, lambda: True, lambda: False,
        lambda: "".join(rng.choice("ab\"\\/\n\t\u00e9\u2028\U0001F600\x01") for _ in range(rng.randint(0, 6))),
    ])()


def test_generated_json_matches_json():
    rng = random.Random(7)
    for _ in range(3000):
        text = json.dumps(random_json(rng), ensure_ascii=rng.random() < 0.5,
                          indent=rng.choice([None, 2, "\t"])).encode()
        assert check_json(text)
        b = bytearray(text)
        i = rng.randrange(len(b))
        op = rng.random()
        if op < 0.5:
            b[i] = rng.choice(b'[]{}:,"\\ 0e-.')
        else:
            b.insert(i, rng.choice(b'[]{}:,"\\ 0e-.'))
        check_json(bytes(b))


def test_jsonc_extensions():
    assert dobj._dobj._config_parse(b'// c\n{"a": [1, 2,], /* b */ "b": {"c": 1,},}\n', "jsonc") == \
        {"a": [1, 2], "b": {"c": 1}}


# ------------------------------------------------------------------ interop

async def test_config_state_folder_is_shared_with_workerd(tmp_path):
    """The unique key and state folder the config gives (Miniflare's
    `<name>-<class_name>` under `<persist_to>/v3/do`) are those workerd
    reads when started as wrangler dev starts it (localDisk on that folder):
    what Python wrote there, workerd reads under the same IDs, and back."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_interop import _peer, _python_reads_cases, _python_writes_cases, _serving, cases

    cfg = dobj.load_config(FIXTURES / "interop", persist_to=tmp_path / "state")
    (b,) = cfg.bindings
    assert (b.unique_key, b.class_name) == ("interop-worker-Interop", "Interop")
    assert cfg.state_dir == str(tmp_path / "state" / "v3" / "do")
    os.makedirs(cfg.state_dir)
    binary, tmpl = _peer(tmp_path, cfg.state_dir)  # (skips here without workerd)

    await _python_writes_cases(cfg.state_dir, b.binding, b.unique_key)
    assert os.path.isdir(b.storage_dir)  # <state_dir>/<unique_key>

    capnp = tmpl / "config.capnp.in"
    text = capnp.read_text()
    assert 'uniqueKey = "interop-key"' in text
    capnp.write_text(text.replace('uniqueKey = "interop-key"', f'uniqueKey = "{b.unique_key}"'))
    with _serving(binary, tmpl) as wd:
        got = json.loads(wd._get("/read"))
        wrote = wd._get("/write")
    assert got["n"] == len(cases()) and got["mismatches"] == [], got
    assert wrote.startswith("workerd wrote")

    back, mismatches = await _python_reads_cases(cfg.state_dir, b.binding, b.unique_key)
    assert mismatches == [], {m: back.get(m) for m in mismatches}
