"""dobj.workers: Cloudflare's Python Workers API (``from workers import ...``)
on dobj.

Code written for Python Workers runs unchanged: a project whose config has the
``python_workers`` compatibility flag gets this module as ``workers`` (and a
small ``pyodide.ffi``) on its import path while ``Runtime.from_config`` imports
its entry (see docs/python.md, "Python Workers compatibility").  Any other code
imports it as ``dobj.workers``.

This is a thin translation: JavaScript names (``idFromName``, ``ctx.storage.
getAlarm``...) onto dobj's Python API, synchronous storage calls into
awaitables, and storage values into the dict/list look-alikes of Pyodide's
JavaScript proxies.  Every rule (limits, checks, messages) is the core's: a
call here goes straight to the dobj call that enforces it.
"""
from __future__ import annotations

import functools
import inspect
import json as _json
from http import HTTPStatus
from typing import Any, Callable, Optional

from . import Context as _Context
from . import DurableObject as _DurableObject
from . import DurableObjectId as _DurableObjectId
from . import Env as _Env
from . import Error
from . import Headers
from . import Namespace as _Namespace
from . import Request as _Request
from . import Response as _Response
from . import Stub as _Stub
from . import WebSocketPair as _WebSocketPair
from . import WebSocketRequestResponsePair
from . import _dobj
from .project import ExecutionContext as _ExecutionContext
from .project import WorkerEntrypoint as _WorkerEntrypoint

__all__ = [
    "DurableObject", "WorkerEntrypoint", "Request", "Response", "FetchResponse",
    "Headers", "handler", "python_to_rpc", "python_from_rpc", "fetch",
    "to_js", "to_py", "JsProxy", "JsMap", "JsException", "JavaScriptUnsupportedError",
    "UnsupportedError", "Context", "WebSocketPair", "WebSocketRequestResponsePair",
]


class JavaScriptUnsupportedError(Error, ImportError):
    """``import js`` in a Python Workers project: dobj runs Python only."""


class UnsupportedError(Error, ImportError):
    """A name of Cloudflare's ``workers`` module that dobj does not provide
    (``from workers import FormData``)."""


_UNSUPPORTED = ("Blob", "BlobEnding", "BlobValue", "File", "FormData", "FormDataValue",
                "JSBody", "Body", "FetchKwargs", "RequestInitCfProperties",
                "WorkflowEntrypoint", "import_from_javascript", "patch_env", "env", "waitUntil")


def __getattr__(name: str) -> Any:
    # An ImportError, not an AttributeError, so that `from workers import X`
    # shows this message instead of Python's generic "cannot import name".
    if name in _UNSUPPORTED:
        raise UnsupportedError(f"workers.{name} is not supported by dobj "
                               "(docs/python.md, Python Workers compatibility)", name=name)
    raise AttributeError(f"module 'workers' has no attribute {name!r}")


def _no_js() -> JavaScriptUnsupportedError:
    return JavaScriptUnsupportedError(
        "dobj runs Python Workers code without JavaScript: the js module (JavaScript "
        "globals and objects such as js.Response or js.Object) is out of scope; use "
        "workers.Response and the workers module's names instead "
        "(docs/python.md, Python Workers compatibility)", name="js")


# ----------------------------------------------------------- values (pyodide.ffi)

class JsProxy:
    """Base of the look-alikes of Pyodide's proxies of JavaScript values that
    storage reads return (:class:`JsObject`, :class:`JsArray`,
    :class:`StorageMap`): plain ``dict``/``list`` subclasses with ``to_py()``."""

    __slots__ = ()

    def to_py(self, *, depth: int = -1, default_converter: Any = None) -> Any:
        return to_py(self, depth=depth)


class JsObject(JsProxy, dict):
    """A JavaScript object or Map read from storage (or an SQL row): a dict
    whose items are also attributes (``row.greeting`` as in Python Workers,
    ``row["greeting"]`` too); ``to_py()`` gives a plain dict."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"the object has no property {name!r}") from None

    def as_object_map(self) -> "JsObject":
        return self


class JsArray(JsProxy, list):
    """A JavaScript array read from storage: a list with ``to_py()``."""

    __slots__ = ()


class StorageMap(JsObject):
    """What ``storage.list()`` and ``storage.get([keys])`` return (a ``Map`` in
    JavaScript): a dict in key order; iterating gives the keys, ``items()``
    the pairs, as Pyodide's proxy of a Map does; ``size``, ``has(key)`` and
    ``to_py()`` are there too."""

    __slots__ = ()

    @property
    def size(self) -> int:
        return len(self)

    def has(self, key: Any) -> bool:
        return key in self

    def entries(self):
        return iter(self.items())


class JsMap(StorageMap):
    """What ``to_js(dict)`` gives, as Pyodide's default makes a JavaScript
    ``Map`` of a dict: a dict that dobj stores and sends as a ``Map`` (also
    with str keys), with the Map methods ``get``, ``set``, ``has``,
    ``delete``, ``size``, ``entries()``; iterating gives the keys."""

    __slots__ = ()
    _dobj_js_map = True  # the value mapping writes it as a Map

    def set(self, key: Any, value: Any) -> "JsMap":
        self[key] = value
        return self

    def delete(self, key: Any) -> bool:
        return self.pop(key, _MISSING) is not _MISSING


_MISSING = object()


def _from_storage(value: Any, memo: Optional[dict] = None) -> Any:
    """A stored value as Python Workers code sees it: dicts and lists become
    JsObject/JsArray (shared parts and cycles stay shared)."""
    t = type(value)
    if t is not dict and t is not list:
        return value
    if memo is None:
        memo = {}
    done = memo.get(id(value))
    if done is not None:
        return done
    if t is dict:
        out: Any = JsObject()
        memo[id(value)] = out
        for k, v in value.items():
            out[k] = _from_storage(v, memo)
    else:
        out = JsArray()
        memo[id(value)] = out
        out.extend(_from_storage(v, memo) for v in value)
    return out


def _convert(value: Any, depth: int, memo: dict, to_js_side: bool, maps: bool = False) -> Any:
    if depth == 0:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value) if to_js_side else value
    if isinstance(value, dict):
        seen = memo.get(id(value))
        if seen is not None:
            return seen
        out: Any = JsMap() if maps else {}
        memo[id(value)] = out
        for k, v in value.items():
            out[k] = _convert(v, depth - 1, memo, to_js_side, maps)
        return out
    if isinstance(value, (list, tuple) if to_js_side else list):
        seen = memo.get(id(value))
        if seen is not None:
            return seen
        out = []
        memo[id(value)] = out
        out.extend(_convert(v, depth - 1, memo, to_js_side, maps) for v in value)
        return out
    if isinstance(value, (set, frozenset)) and to_js_side:
        return set(value)
    return value


def to_js(obj: Any, *, depth: int = -1, pyproxies: Any = None, create_pyproxies: bool = True,
          dict_converter: Any = None, default_converter: Any = None,
          eager_converter: Any = None) -> Any:
    """``pyodide.ffi.to_js``: there is no JavaScript heap here, so the result
    is the Python value dobj stores or sends as that JavaScript value: dicts
    (a :class:`JsMap`, stored and sent as a ``Map`` as Pyodide's default
    makes one; with a ``dict_converter``, such as ``Object.fromEntries``, a
    plain ``dict``: an object), lists and tuples (``list``), ``bytes``-likes
    (``bytes``, a ``Uint8Array``), sets, copied ``depth`` levels deep (-1:
    all).  The other keyword arguments are accepted and ignored."""
    return _convert(obj, depth, {}, True, dict_converter is None)


def to_py(obj: Any, *, depth: int = -1, default_converter: Any = None) -> Any:
    """The plain Python value of a storage read (what ``JsProxy.to_py()``
    gives): JsObject/StorageMap → ``dict``, JsArray → ``list``, deeply;
    anything else is returned as it is."""
    return _convert(obj, depth, {}, False)


JsException = Error  # what an awaited storage or RPC call raises: dobj's errors


# --------------------------------------------------------------- awaitables

class _Done:
    """The awaitable a storage call returns: the call has run already (as a
    JavaScript storage call applies its write at once, awaited or not), so
    ``await`` gives its result without suspending."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self):
        return self.value
        yield  # noqa: unreachable  (makes this a generator)


_DONE_NONE = _Done(None)  # awaiting it never changes it: one is enough
_UNSET = object()


def _options(options: Any, kw: dict, known: tuple, what: str) -> dict:
    """JavaScript options, given as a dict (or keyword arguments, as Pyodide
    passes them): the names known for ``what``, as given."""
    if options is not None:
        if not isinstance(options, dict):
            raise TypeError(f"{what}() options must be a dict, got {type(options).__name__}")
        kw = {**options, **kw}
    for name in kw:
        if name not in known:
            raise TypeError(f"{what}() got an unknown option {name!r} "
                            f"(known: {', '.join(known)})")
    return kw


_RW_OPTIONS = ("allowConcurrency", "allowUnconfirmed", "noCache")
_LIST_OPTIONS = ("start", "startAfter", "end", "prefix", "reverse", "limit",
                 "allowConcurrency", "noCache")


# ------------------------------------------------------------------ storage

class _Storage:
    """``ctx.storage`` with the JavaScript names, awaited: each call runs the
    synchronous dobj call (``dobj.Storage``) at once.  ``allowConcurrency``,
    ``allowUnconfirmed`` and ``noCache`` are accepted and have no effect (every
    call is synchronous and every write is confirmed before the response)."""

    __slots__ = ("_s", "_sql")

    def __init__(self, s: Any) -> None:
        self._s = s
        self._sql = None

    # get, put and delete are the hot calls: options are looked at only when
    # given, and a plain value read back is not copied.
    def get(self, keys: Any, options: Any = None, **kw: Any) -> _Done:
        if options is not None or kw:
            _options(options, kw, _RW_OPTIONS, "get")
        value = self._s.get(keys)
        if type(keys) is not str and isinstance(keys, (list, tuple)):
            return _Done(StorageMap((k, _from_storage(v)) for k, v in value.items()))
        t = type(value)
        return _Done(_from_storage(value) if t is dict or t is list else value)

    def put(self, key_or_entries: Any, value: Any = _UNSET, options: Any = None,
            **kw: Any) -> _Done:
        if value is _UNSET:
            if options is not None or kw:
                _options(options, kw, _RW_OPTIONS, "put")
            self._s.put(key_or_entries)  # entries, or the "undefined value" error
        elif isinstance(key_or_entries, dict):  # put(entries, options)
            _options(value, kw, _RW_OPTIONS, "put")
            self._s.put(key_or_entries)
        else:
            if options is not None or kw:
                _options(options, kw, _RW_OPTIONS, "put")
            self._s.put(key_or_entries, value)
        return _DONE_NONE

    def delete(self, keys: Any, options: Any = None, **kw: Any) -> _Done:
        if options is not None or kw:
            _options(options, kw, _RW_OPTIONS, "delete")
        return _Done(self._s.delete(keys))

    def deleteAll(self, options: Any = None, **kw: Any) -> _Done:  # noqa: N802
        _options(options, kw, _RW_OPTIONS, "deleteAll")
        self._s.delete_all()
        return _DONE_NONE

    def list(self, options: Any = None, **kw: Any) -> _Done:
        opts = _options(options, kw, _LIST_OPTIONS, "list")
        opts.pop("allowConcurrency", None)
        opts.pop("noCache", None)
        if "startAfter" in opts:
            opts["start_after"] = opts.pop("startAfter")
        return _Done(StorageMap((k, _from_storage(v)) for k, v in self._s.list(**opts).items()))

    def getAlarm(self, options: Any = None, **kw: Any) -> _Done:  # noqa: N802
        _options(options, kw, ("allowConcurrency",), "getAlarm")
        return _Done(self._s.get_alarm())

    def setAlarm(self, scheduled_time: Any, options: Any = None, **kw: Any) -> _Done:  # noqa: N802
        _options(options, kw, ("allowConcurrency", "allowUnconfirmed"), "setAlarm")
        self._s.set_alarm(scheduled_time)
        return _DONE_NONE

    def deleteAlarm(self, options: Any = None, **kw: Any) -> _Done:  # noqa: N802
        _options(options, kw, ("allowConcurrency", "allowUnconfirmed"), "deleteAlarm")
        self._s.delete_alarm()
        return _DONE_NONE

    def sync(self) -> Any:
        return self._s.sync()

    def transaction(self, fn: Callable[[Any], Any]) -> Any:
        """``await storage.transaction(async def fn(txn))``: dobj's
        ``transaction`` with ``txn`` given the same JavaScript names."""
        return self._s.transaction(lambda txn: fn(_Transaction(txn)))

    def transactionSync(self, fn: Callable[[], Any]) -> Any:  # noqa: N802
        """``storage.transactionSync(fn)``: ``fn()`` (no argument, as in
        JavaScript) in a transaction; its writes roll back if it raises."""
        return self._s.transaction_sync(lambda txn: fn())

    @property
    def kv(self) -> "_SyncKv":
        return _SyncKv(self._s)

    @property
    def sql(self) -> "_Sql":
        sql = self._sql
        if sql is None:
            sql = self._sql = _Sql(self._s.sql)
        return sql

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"ctx.storage.{name} is not supported by dobj "
                             "(docs/python.md, Python Workers compatibility)")


class _Transaction(_Storage):
    """The ``txn`` of ``storage.transaction(fn)``."""

    __slots__ = ()

    def rollback(self) -> None:
        self._s.rollback()


class _SyncKv:
    """``ctx.storage.kv``, workerd's synchronous key-value API (SQLite-backed
    objects): ``get(key)``, ``put(key, value)``, ``delete(key)`` and
    ``list(options)`` (an iterator of ``[key, value]`` pairs), not awaited."""

    __slots__ = ("_s",)

    def __init__(self, s: Any) -> None:
        self._s = s

    def get(self, key: str) -> Any:
        value = self._s.get(key)
        t = type(value)
        return _from_storage(value) if t is dict or t is list else value

    def put(self, key: str, value: Any = _UNSET) -> None:
        if value is _UNSET:
            self._s.put(key)  # the "undefined value" error
        else:
            self._s.put(key, value)

    def delete(self, key: str) -> bool:
        return self._s.delete(key)

    def list(self, options: Any = None, **kw: Any):
        return (JsArray((k, v)) for k, v in _Storage.list(self, options, **kw).value.items())


class _Sql:
    """``ctx.storage.sql``: ``exec(query, *bindings)`` and ``databaseSize``."""

    __slots__ = ("_sql",)

    def __init__(self, sql: Any) -> None:
        self._sql = sql

    def exec(self, query: str, *bindings: Any) -> "_Cursor":
        return _Cursor(self._sql.exec(query, *bindings))

    @property
    def databaseSize(self) -> int:  # noqa: N802
        return self._sql.database_size


class _Cursor:
    """The cursor of ``sql.exec``: iterate it for rows (:class:`JsObject`, so
    ``row.name`` works as in Python Workers), ``toArray()``, ``one()``,
    ``raw()``, ``next()`` (JavaScript's ``{done, value}``), ``columnNames``,
    ``rowsRead``, ``rowsWritten``."""

    __slots__ = ("_c",)

    def __init__(self, c: Any) -> None:
        self._c = c

    def __iter__(self) -> "_Cursor":
        return self

    def __next__(self) -> JsObject:
        return JsObject(next(self._c))

    def next(self) -> JsObject:
        for row in self._c:
            return JsObject(done=False, value=JsObject(row))
        return JsObject(done=True)

    def toArray(self) -> JsArray:  # noqa: N802
        return JsArray(JsObject(r) for r in self._c.to_array())

    def one(self) -> JsObject:
        return JsObject(self._c.one())

    def raw(self):
        return (JsArray(r) for r in self._c.raw())

    @property
    def columnNames(self) -> list:  # noqa: N802
        return JsArray(self._c.column_names)

    @property
    def rowsRead(self) -> int:  # noqa: N802
        return self._c.rows_read

    @property
    def rowsWritten(self) -> int:  # noqa: N802
        return self._c.rows_written


# ------------------------------------------------------- IDs, stubs, namespaces

class _Id:
    """A Durable Object ID with the JavaScript names: ``toString()``,
    ``equals(other)``, ``name``."""

    __slots__ = ("_id",)

    def __init__(self, id: Any) -> None:
        self._id = id

    def toString(self) -> str:  # noqa: N802
        return self._id.to_string()

    def equals(self, other: Any) -> bool:
        return self._id.equals(_unwrap(other))

    @property
    def name(self) -> Optional[str]:
        return self._id.name

    def __str__(self) -> str:
        return self._id.to_string()

    def __repr__(self) -> str:
        return f"<DurableObjectId {self._id.to_string()}>"

    def __eq__(self, other: object) -> bool:
        return self._id == _unwrap(other)

    def __hash__(self) -> int:
        return hash(self._id)

    def _dobj_rpc_value(self) -> Any:
        """What dobj's value mapping sends for this ID (dobj's ID)."""
        return self._id


def _unwrap(value: Any) -> Any:
    t = type(value)
    if t is _Id:
        return value._id
    if t is _DOStub:
        return value._stub
    return value


def _wrap(value: Any) -> Any:
    t = type(value)
    if t is _Stub:
        return _DOStub(value)
    if t is _DurableObjectId:
        return _Id(value)
    return value


_SCALARS = frozenset((str, int, float, bool, type(None), bytes))


def _wrap_deep(value: Any, memo: Optional[dict] = None) -> Any:
    """An RPC value as Python Workers code sees it: every stub and ID in it,
    at any depth, with the JavaScript names.  Containers that hold none are
    returned as they are; shared ones stay shared."""
    t = type(value)
    if t in _SCALARS:
        return value
    if t is _Stub or t is _DurableObjectId:
        return _wrap(value)
    if t is not list and t is not dict and t is not set and t is not tuple:
        return value
    if memo is None:
        memo = {}
    key = id(value)
    if key in memo:
        return memo[key]
    memo[key] = value  # until proven otherwise (a cycle reads the original)
    if t is dict:
        items = [(_wrap_deep(k, memo), _wrap_deep(v, memo)) for k, v in value.items()]
        if all(a is k and b is v for (a, b), (k, v) in zip(items, value.items())):
            return value
        out: Any = dict(items)
    else:
        elems = [_wrap_deep(v, memo) for v in value]
        if all(a is b for a, b in zip(elems, value)):
            return value
        out = t(elems)
    memo[key] = out
    return out


class _RpcCall:
    """``stub.anyMethod(...)``: the call is made at once (calls keep their
    order); awaiting it gives the result with its stubs and IDs (at any
    depth) in their Python Workers form."""

    __slots__ = ("_call",)

    def __init__(self, call: Any) -> None:
        self._call = call

    def __await__(self) -> Any:
        return _wrap_deep((yield from self._call.__await__()))


class _DOStub:
    """A stub: ``await stub.fetch(url_or_request, method=, headers=, body=)``
    (a :class:`FetchResponse`), ``await stub.anyMethod(...)`` (RPC), ``id``,
    ``name``.  Stubs and IDs travel in RPC arguments and results at any
    depth, as on Cloudflare (dobj's own forms underneath, see
    ``_dobj_rpc_value``)."""

    __slots__ = ("_stub",)

    def __init__(self, stub: Any) -> None:
        self._stub = stub

    @property
    def id(self) -> _Id:
        return _Id(self._stub.id)

    @property
    def name(self) -> Optional[str]:
        return self._stub.name

    async def fetch(self, resource: Any, *, method: Any = None, headers: Any = None,
                    body: Any = None, redirect: Any = None, cf: Any = None) -> "FetchResponse":
        resp = await self._stub.fetch(resource, method=method, headers=headers, body=body)
        return FetchResponse._adopt(resp)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("__"):
            raise AttributeError(name)
        rpc = self._stub._rpc

        def method(*args: Any, **kwargs: Any) -> Any:
            return _RpcCall(rpc(name, *args, **kwargs))
        method.__name__ = name
        return method

    def _dobj_rpc_value(self) -> Any:
        """What dobj's value mapping sends for this stub (dobj's stub)."""
        return self._stub

    def __repr__(self) -> str:
        return f"<DurableObjectStub {self._stub.id}>"


class _DONamespace:
    """``env.BINDING``: ``idFromName``, ``newUniqueId``, ``idFromString``,
    ``get``, ``getByName``, ``jurisdiction``."""

    __slots__ = ("_ns",)

    def __init__(self, ns: Any) -> None:
        self._ns = ns

    def idFromName(self, name: str) -> _Id:  # noqa: N802
        return _Id(self._ns.id_from_name(name))

    def newUniqueId(self, options: Any = None, **kw: Any) -> _Id:  # noqa: N802
        opts = _options(options, kw, ("jurisdiction",), "newUniqueId")
        return _Id(self._ns.new_unique_id(opts.get("jurisdiction")))

    def idFromString(self, hex_id: str) -> _Id:  # noqa: N802
        return _Id(self._ns.id_from_string(hex_id))

    def get(self, id: Any, options: Any = None, **kw: Any) -> _DOStub:
        opts = _options(options, kw, ("locationHint",), "get")
        return _DOStub(self._ns.get(_unwrap(id), opts.get("locationHint")))

    def getByName(self, name: str, options: Any = None, **kw: Any) -> _DOStub:  # noqa: N802
        _options(options, kw, ("locationHint",), "getByName")
        return _DOStub(self._ns.get_by_name(name))

    def jurisdiction(self, name: Optional[str]) -> "_DONamespace":
        return _DONamespace(self._ns.jurisdiction(name))

    def __repr__(self) -> str:
        return f"<DurableObjectNamespace {self._ns.binding}>"


class _WorkersEnv:
    """``self.env``: vars as values, namespaces with the JavaScript names."""

    __slots__ = ("_env", "_cache")

    def __init__(self, env: Any) -> None:
        self._env = env
        self._cache: dict = {}

    def __getitem__(self, name: str) -> Any:
        value = self._cache.get(name, self)
        if value is self:
            value = self._env[name]
            if isinstance(value, _Namespace):
                value = _DONamespace(value)
            else:
                value = _from_storage(value)
            self._cache[name] = value
        return value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"env has no binding {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._env

    def __iter__(self):
        return iter(self._env)

    def __repr__(self) -> str:
        return f"Env({list(self._env)})"


# ------------------------------------------------------------------ contexts

class _DOContext:
    """A Durable Object's ``ctx``: ``id``, ``storage``,
    ``blockConcurrencyWhile(fn)`` (awaitable; in ``__init__`` call it without
    ``await``), ``waitUntil(awaitable)``, ``abort(reason)``."""

    __slots__ = ("_ctx", "_storage")

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx
        self._storage = None

    @property
    def id(self) -> _Id:
        return _Id(self._ctx.id)

    @property
    def storage(self) -> _Storage:
        s = self._storage
        if s is None:
            s = self._storage = _Storage(self._ctx.storage)
        return s

    def blockConcurrencyWhile(self, fn: Callable[[], Any]) -> Any:  # noqa: N802
        return self._ctx.block_concurrency_while(fn)

    def waitUntil(self, awaitable: Any) -> None:  # noqa: N802
        self._ctx.wait_until(awaitable)

    def abort(self, reason: Any = None) -> Any:
        return self._ctx.abort(reason)

    # The WebSocket hibernation API (dobj's ctx methods, JavaScript names).
    def acceptWebSocket(self, ws: Any, tags: Any = None) -> None:  # noqa: N802
        self._ctx.accept_web_socket(ws, tags)

    def getWebSockets(self, tag: Any = None) -> Any:  # noqa: N802
        return self._ctx.get_web_sockets(tag)

    def getTags(self, ws: Any) -> Any:  # noqa: N802
        return self._ctx.get_tags(ws)

    def setWebSocketAutoResponse(self, pair: Any = None) -> None:  # noqa: N802
        self._ctx.set_web_socket_auto_response(pair)

    def getWebSocketAutoResponse(self) -> Any:  # noqa: N802
        return self._ctx.get_web_socket_auto_response()

    def getWebSocketAutoResponseTimestamp(self, ws: Any) -> Any:  # noqa: N802
        return self._ctx.get_web_socket_auto_response_timestamp(ws)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"ctx.{name} is not supported by dobj "
                             "(docs/python.md, Python Workers compatibility)")


class _EntryContext:
    """The entry's ``ctx``: ``waitUntil(awaitable)``."""

    __slots__ = ("_ctx",)

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx

    def waitUntil(self, awaitable: Any) -> None:  # noqa: N802
        self._ctx.wait_until(awaitable)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"ctx.{name} is not supported by dobj "
                             "(docs/python.md, Python Workers compatibility)")


Context = _EntryContext  # the type Python Workers names for an entry's ctx


def _ctx(ctx: Any) -> Any:
    if isinstance(ctx, _Context):
        return _DOContext(ctx)
    if isinstance(ctx, _ExecutionContext):
        return _EntryContext(ctx)
    return ctx


def _env(env: Any) -> Any:
    return _WorkersEnv(env) if isinstance(env, _Env) else env


# ------------------------------------------------------- requests, responses

class MessageHeaders(Headers):
    """``request.headers`` as Python Workers gives it (an
    ``http.client.HTTPMessage``): ``headers["missing"]`` is ``None``, and
    ``get_all(name)`` lists the values (repeated headers are joined with
    ``", "``, as fetch() joins them, except set-cookie: each on its own)."""

    __slots__ = ()

    def __getitem__(self, name: str) -> Optional[str]:  # type: ignore[override]
        return self.get(name)

    def get_all(self, name: str, failobj: Any = None) -> Any:
        """Every value of ``name``: one for most headers (repeated ones are
        joined with ``", "``), each on its own for set-cookie."""
        if not isinstance(name, str):
            return failobj
        value = self._items.get(name.lower())
        if value is None:
            return failobj
        return list(value) if type(value) is list else [value]


class Request(_Request):
    """A request as Python Workers code sees it: ``url``, ``method``,
    ``headers`` (case-insensitive), ``await text()``, ``await json()``,
    ``await bytes()``.  ``Request(url_or_request, method=, headers=, body=)``
    (``redirect=`` and ``cf=`` are accepted and ignored)."""

    __slots__ = ()

    def __init__(self, input: Any, *, method: Any = None, headers: Any = None,
                 body: Any = None, redirect: Any = None, cf: Any = None) -> None:
        if isinstance(input, _Request):
            src = input
            super().__init__(src.url, method=str(method or src.method),
                             headers=headers if headers is not None else src.headers,
                             body=body if body is not None else src.body)
        else:
            super().__init__(input, method=str(method or "GET"), headers=headers, body=body)

    @classmethod
    def _adopt(cls, req: Any) -> "Request":
        if isinstance(req, Request):
            return req
        r = cls.__new__(cls)
        r.url, r.method, r._headers, r.body = req.url, req.method, req._headers, req.body
        return r

    @property
    def headers(self) -> MessageHeaders:  # type: ignore[override]
        h = self._headers
        if type(h) is not MessageHeaders:
            h = self._headers = MessageHeaders(h)
        return h

    def text(self) -> _Done:  # type: ignore[override]
        return _Done(self.body.decode("utf-8"))

    def json(self, **kwargs: Any) -> _Done:  # type: ignore[override]
        return _Done(_json.loads(self.body, **kwargs))

    def bytes(self) -> _Done:
        return _Done(self.body)

    def clone(self) -> "Request":
        return Request(self)

    @property
    def js_object(self) -> "Request":
        """The request itself (what ``asgi.fetch(app, request.js_object,
        env)`` gets in Python Workers' FastAPI examples)."""
        return self


class _ResponseJson:
    """``Response.json(data, status=, status_text=, headers=)`` builds a JSON
    response; ``await response.json()`` parses one."""

    def __get__(self, obj: Any, cls: Any) -> Any:
        if obj is None:
            return functools.partial(Response.from_json)
        return lambda **kwargs: _Done(_json.loads(obj.body, **kwargs))


class FetchResponse(_Response):
    """A response: ``status``, ``status_text``, ``ok``, ``headers``, and the
    body read with ``await text()``, ``await json()``, ``await bytes()``."""

    __slots__ = ()  # _status_text is dobj.Response's

    @classmethod
    def _adopt(cls, resp: Any) -> "FetchResponse":
        if isinstance(resp, FetchResponse):
            return resp
        r = FetchResponse.__new__(FetchResponse)
        r.status, r._headers, r.body = resp.status, resp._headers, resp.body
        r._status_text = getattr(resp, "_status_text", None) or ""
        r.web_socket = getattr(resp, "web_socket", None)
        return r

    @property
    def status_text(self) -> str:
        return getattr(self, "_status_text", None) or ""

    def text(self) -> _Done:  # type: ignore[override]
        return _Done(self.body.decode("utf-8"))

    json = _ResponseJson()  # type: ignore[assignment]

    def bytes(self) -> _Done:
        return _Done(self.body)

    def clone(self) -> "FetchResponse":
        r = type(self).__new__(type(self))
        r.status, r.body, r._status_text = self.status, self.body, self.status_text
        r._headers = Headers(self._headers) if self._headers is not None else None
        return r

    def __repr__(self) -> str:
        return f"Response(status={self.status})"


class Response(FetchResponse):
    """``Response(body=None, status=200, status_text="", headers=None)``;
    ``Response.json(data, ...)``, ``Response.redirect(url, status=302)``.
    Returned from ``fetch`` as a ``dobj.Response`` (this is a subclass);
    ``status_text`` stays with the object (HTTP/1.1 servers send their own
    reason phrase)."""

    __slots__ = ()

    def __init__(self, body: Any = None, status: Any = None, status_text: str = "",
                 headers: Any = None, web_socket: Any = None) -> None:
        if isinstance(status, HTTPStatus):
            status = status.value
        _dobj._status_text_check(status_text)  # the core's rule (workerd's TypeError)
        super().__init__(body, status=200 if status is None else status, headers=headers,
                         web_socket=web_socket)
        self._status_text = status_text

    @staticmethod
    def from_json(data: Any, status: Any = HTTPStatus.OK, status_text: str = "",
                  headers: Any = None) -> "Response":
        h = Headers(headers)
        if not h.has("content-type"):  # the core's type (DOBJ_MSG_JSON_TYPE)
            h.set("content-type", _dobj._JSON_TYPE)
        return Response(_json.dumps(data), status, status_text, h)

    @staticmethod
    def redirect(url: str, status: Any = HTTPStatus.FOUND) -> "Response":
        return Response(None, status, "", {"location": url})


# ------------------------------------------------------------ the base classes

def _plain(result: Any) -> Any:
    """A response leaving a handler, as a plain ``dobj.Response``: the caller
    may be dobj code (``rt.default.fetch``, a dobj stub), which reads
    ``text()`` without ``await``; a workers stub adopts it again.  A
    ``status_text`` it was given goes with it (as statusText does)."""
    if isinstance(result, FetchResponse):
        r = _Response.__new__(_Response)
        r.status, r._headers, r.body = result.status, result._headers, result.body
        r.web_socket = getattr(result, "web_socket", None)
        if result.status_text:
            r._status_text = result.status_text
        return r
    return result


_WEBSOCKET_HANDLERS = (("webSocketMessage", "web_socket_message"),
                       ("webSocketClose", "web_socket_close"),
                       ("webSocketError", "web_socket_error"))


class WebSocketPair(_WebSocketPair):
    """``client, server = WebSocketPair.new().object_values()`` (the Python
    Workers spelling; ``WebSocketPair()`` unpacks the same way)."""

    __slots__ = ()

    @classmethod
    def new(cls) -> "WebSocketPair":
        return cls()

    def object_values(self) -> tuple:
        return tuple(self)


def _wrap_handlers(cls: type) -> None:
    """fetch(request) gets a :class:`Request`, alarm(alarm_info) an info with
    ``retryCount`` and ``isRetry``: wrap the ones ``cls`` defines."""
    fetch = cls.__dict__.get("fetch")
    if inspect.isfunction(fetch) and not getattr(fetch, "_dobj_workers", False):
        @functools.wraps(fetch)
        async def fetch_wrapper(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(request, _Request):
                request = Request._adopt(request)
            result = fetch(self, request, *args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return _plain(result)
        fetch_wrapper._dobj_workers = True  # type: ignore[attr-defined]
        cls.fetch = fetch_wrapper  # type: ignore[attr-defined]
    for name, fn in list(cls.__dict__.items()):
        if inspect.isfunction(fn) and not name.startswith("_") and name not in ("fetch", "alarm") \
                and not getattr(fn, "_dobj_workers", False):
            setattr(cls, name, _translating_args(fn))
    for js, py in _WEBSOCKET_HANDLERS:  # webSocketMessage -> web_socket_message
        fn = cls.__dict__.get(js)
        if fn is not None and py not in cls.__dict__:
            setattr(cls, py, fn)
    alarm = cls.__dict__.get("alarm")
    if inspect.isfunction(alarm) and not getattr(alarm, "_dobj_workers", False):
        @functools.wraps(alarm)
        def alarm_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            if args and hasattr(args[0], "retry_count") and not isinstance(args[0], AlarmInfo):
                args = (AlarmInfo(args[0]),) + args[1:]
            return alarm(self, *args, **kwargs)
        alarm_wrapper._dobj_workers = True  # type: ignore[attr-defined]
        cls.alarm = alarm_wrapper  # type: ignore[attr-defined]


def _translating_args(fn: Callable[..., Any]) -> Callable[..., Any]:
    """An RPC method: IDs and stubs in its arguments (at any depth) get the
    JavaScript names.  The result is returned as it is (a coroutine stays
    one), so calls from the object's own code are unchanged; stubs and IDs
    in it travel back as dobj's (``_dobj_rpc_value``)."""
    @functools.wraps(fn)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            kwargs = {k: _wrap_deep(v) for k, v in kwargs.items()}
        return fn(self, *map(_wrap_deep, args), **kwargs)
    method._dobj_workers = True  # type: ignore[attr-defined]
    return method


class AlarmInfo:
    """The ``alarm_info`` of ``alarm(self, alarm_info)``: ``retryCount``,
    ``isRetry`` (and ``scheduled_time``, dobj's, in ms)."""

    __slots__ = ("retryCount", "isRetry", "scheduled_time")

    def __init__(self, info: Any) -> None:
        self.retryCount = info.retry_count
        self.isRetry = info.is_retry
        self.scheduled_time = info.scheduled_time

    def __repr__(self) -> str:
        return f"AlarmInfo(retryCount={self.retryCount}, isRetry={self.isRetry})"


class _Convert(type):
    """Metaclass of the base classes: ``ctx`` and ``env`` get the JavaScript
    names before the class's own ``__init__`` sees them (also when it does
    not call ``super().__init__``)."""

    def __call__(cls, ctx: Any, env: Any, *args: Any, **kwargs: Any) -> Any:
        return super().__call__(_ctx(ctx), _env(env), *args, **kwargs)


class DurableObject(_DurableObject, metaclass=_Convert):
    """Base class of a Durable Object written for Python Workers."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _wrap_handlers(cls)


class WorkerEntrypoint(_WorkerEntrypoint, metaclass=_Convert):
    """Base class of a Worker's ``class Default(WorkerEntrypoint)``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _wrap_handlers(cls)


def handler(func: Callable[..., Any]) -> Callable[..., Any]:
    """``@handler`` on ``on_fetch``: nothing to do here (the entry gets
    Python values already); returns ``func``."""
    return func


def python_to_rpc(value: Any) -> Any:
    """Identity: RPC arguments are Python values already."""
    return value


def python_from_rpc(value: Any) -> Any:
    """Identity: RPC results are Python values already."""
    return value


async def fetch(resource: Any, *, method: Any = None, headers: Any = None, body: Any = None,
                redirect: Any = None, cf: Any = None) -> FetchResponse:
    """``await workers.fetch(url_or_request, method=, headers=, body=)``: an
    outbound HTTP request, made by the standard library's ``urllib`` in a
    worker thread (the event loop and the object's other events go on
    meanwhile, as while JavaScript awaits a fetch).  Redirects are followed;
    an HTTP error status is a response, not an exception; a network failure
    raises ``urllib.error.URLError`` (an ``OSError``).  ``redirect`` and
    ``cf`` are accepted and ignored."""
    import asyncio
    import urllib.error
    import urllib.request

    if isinstance(resource, _Request) and method is None and headers is None and body is None:
        req = resource
    else:
        req = Request(resource, method=method, headers=headers, body=body)
    outgoing = urllib.request.Request(req.url, data=req.body if req.body else None,
                                      method=req.method, headers=dict(req.headers.items()))

    def send() -> Any:
        try:
            with urllib.request.urlopen(outgoing) as r:  # noqa: S310  (the user's URL)
                return r.status, r.reason, r.headers.items(), r.read()
        except urllib.error.HTTPError as e:  # a status, not a failure
            with e:
                return e.code, e.reason, e.headers.items(), e.read()

    status, reason, pairs, data = await asyncio.get_running_loop().run_in_executor(None, send)
    resp = FetchResponse.__new__(FetchResponse)
    resp.status, resp.body, resp._status_text = status, data, reason or ""
    h = resp._headers = Headers()
    for k, v in pairs:
        h.append(k, v)
    return resp


def _entry_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A module-level ``on_fetch(request, env, ctx)`` (or ``(request, env)``,
    ``(request)``) as dobj's entry function ``fetch(request, env, ctx)``."""
    try:
        params = inspect.signature(fn).parameters.values()
        varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
        n = 3 if varargs else sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                                  for p in params)
    except (TypeError, ValueError):
        n = 3

    async def on_fetch(request: Any, env: Any, ctx: Any) -> Any:
        result = fn(*(Request._adopt(request), _env(env), _ctx(ctx))[:n])
        if inspect.isawaitable(result):
            result = await result
        return _plain(result)
    return on_fetch



# --------------------------------------------------------- ASGI apps (import asgi)

async def asgi_fetch(app: Any, request: Any, env: Any, ctx: Any = None) -> FetchResponse:
    """``asgi.fetch(app, request, env, ctx=None)``: :func:`dobj.asgi.fetch`
    (one request through an ASGI app, FastAPI or Starlette, with ``env`` in
    ``scope["env"]``), its response read with ``await`` like any other here."""
    from . import asgi
    return FetchResponse._adopt(await asgi.fetch(app, request, env, ctx))
