"""dobj.load_config: a Workers project's wrangler configuration.

The core reads and resolves the file (``wrangler.json``, ``wrangler.jsonc``
or ``wrangler.toml``, environments, ``.dev.vars``): the rules live once, in
C, for Python and Lua alike.  This module only gives the result a shape.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping, Optional, Tuple, Union

from . import _dobj

if TYPE_CHECKING:  # the extension has no stubs of its own: its class, typed here
    from . import Error

    class ConfigError(Error, ValueError):
        """A wrangler configuration the core refuses (file, key, line)."""
else:
    from ._dobj import ConfigError

__all__ = ["load_config", "Config", "Binding", "Migration", "ClusterSettings", "ConfigError"]

#: A path, as CPython's own file functions take one: str or bytes, or an
#: os.PathLike whose ``__fspath__`` returns either.
PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


@dataclass(frozen=True)
class Binding:
    """A Durable Object binding: ``env.<binding>`` is a namespace of
    ``class_name`` whose IDs use ``unique_key`` (Miniflare's
    ``<worker name>-<class_name>``) and whose state is in ``storage_dir``.
    ``id_key`` is the key its IDs derive from: ``unique_key``, except for a
    class renamed by ``renamed_classes``, whose objects keep their IDs (as on
    Cloudflare): ``<worker name>-<the class's first name>``."""

    binding: str
    class_name: str
    unique_key: str
    storage_dir: str
    sqlite: bool
    id_key: str


@dataclass(frozen=True)
class Migration:
    tag: str
    new_classes: Tuple[str, ...]
    new_sqlite_classes: Tuple[str, ...]
    renamed_classes: Tuple[Tuple[str, str], ...]
    deleted_classes: Tuple[str, ...]


@dataclass(frozen=True)
class ClusterSettings:
    """The cluster settings in effect (docs/cluster.md): each from the first
    of the caller (``dobj dev --cluster``, ``from_config(cluster=...)``),
    the environment (``DOBJ_CLUSTER_URL``, ``DOBJ_NODE_ADDR``,
    ``DOBJ_CLUSTER_TTL``, ``DOBJ_CLUSTER_GRACE``, ``DOBJ_CLUSTER_TIMEOUT``,
    ``DOBJ_CLUSTER_CALL_TIMEOUT``, ``DOBJ_CLUSTER_SNAPSHOT_BYTES``,
    ``DOBJ_CLUSTER_SNAPSHOT_PART_BYTES``) and the config's ``[dobj.cluster]``
    table.  Seconds, or bytes (``snapshot_bytes`` 0: never); ``None``: the
    core's default."""

    url: str
    node_addr: Optional[str]
    ttl: Optional[float]
    grace: Optional[float]
    timeout: Optional[float]
    call_timeout: Optional[float] = None
    snapshot_bytes: Optional[int] = None
    snapshot_part_bytes: Optional[int] = None


@dataclass(frozen=True)
class Config:
    """A resolved configuration (read-only).  Paths are absolute."""

    config_path: str
    env: Optional[str]
    name: Optional[str]
    worker_name: str
    main: Optional[str]
    compatibility_date: Optional[str]
    compatibility_flags: Tuple[str, ...]
    vars: Mapping[str, Any]
    dev_vars_path: Optional[str]
    bindings: Tuple[Binding, ...]
    migrations: Tuple[Migration, ...]
    state_dir: str
    warnings: Tuple[str, ...]
    #: Cluster mode: the settings in effect, or ``None`` (not a node).
    cluster: Optional[ClusterSettings] = None

    @property
    def compatibility(self) -> Tuple[Optional[str], Tuple[str, ...]]:
        """``(compatibility_date, compatibility_flags)``."""
        return self.compatibility_date, self.compatibility_flags


def _opt_path(p: Optional[PathLike]) -> Union[str, bytes, None]:
    # os.fspath's str or bytes (its TypeError for anything else); the
    # extension takes both, as the file system's bytes.
    return None if p is None else os.fspath(p)


def load_config(
    path: Optional[PathLike] = None,
    *,
    env: Optional[str] = None,
    persist_to: Optional[PathLike] = None,
) -> Config:
    """Read a project's wrangler configuration.

    ``path`` is the config file or a folder to look in (and above, as
    wrangler does; ``wrangler.json`` wins over ``wrangler.jsonc`` over
    ``wrangler.toml``); default: the current folder.  ``env`` selects
    ``[env.NAME]`` (default: ``$CLOUDFLARE_ENV``; ``""`` for the top level).
    ``persist_to`` is ``wrangler dev --persist-to``: state goes to
    ``<persist_to>/v3/do`` instead of ``.wrangler/state/v3/do`` next to the
    config.  ``cluster`` is the cluster settings in effect (the environment's
    over the file's; see :class:`ClusterSettings`).  Raises
    :class:`ConfigError` (a ``dobj.Error`` and a ``ValueError``) naming the
    file (or the environment variable), the key and, for syntax errors, the
    line.
    """
    return _load(path, env, persist_to, False)


def _load(path: Optional[PathLike], env: Optional[str], persist_to: Optional[PathLike],
          starting: bool, cluster: Optional[Tuple[Any, ...]] = None) -> Config:
    """load_config; ``starting``: the project starts, so ``renamed_classes``
    move the state folders first (the core's dobj_config_move_renamed);
    ``cluster``: the caller's (url, node_addr, ttl, grace, timeout,
    call_timeout, snapshot_bytes, snapshot_part_bytes), each
    ``None`` when not given."""
    raw = _dobj._config_load(_opt_path(path), env, _opt_path(persist_to), starting, cluster)
    cl = raw["cluster"]
    return Config(
        config_path=raw["config_path"],
        env=raw["env"],
        name=raw["name"],
        worker_name=raw["worker_name"],
        main=raw["main"],
        compatibility_date=raw["compatibility_date"],
        compatibility_flags=tuple(raw["compatibility_flags"]),
        vars=MappingProxyType(raw["vars"]),
        dev_vars_path=raw["dev_vars_path"],
        bindings=tuple(Binding(**b) for b in raw["bindings"]),
        migrations=tuple(
            Migration(
                tag=m["tag"],
                new_classes=tuple(m["new_classes"]),
                new_sqlite_classes=tuple(m["new_sqlite_classes"]),
                renamed_classes=tuple((r["from"], r["to"]) for r in m["renamed_classes"]),
                deleted_classes=tuple(m["deleted_classes"]),
            )
            for m in raw["migrations"]
        ),
        state_dir=raw["state_dir"],
        warnings=tuple(raw["warnings"]),
        cluster=None if cl is None else ClusterSettings(**cl),
    )
