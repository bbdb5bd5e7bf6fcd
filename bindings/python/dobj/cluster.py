"""Cluster mode on PostgreSQL (docs/cluster.md).

A runtime joins a cluster with ``dobj.Runtime(cluster="postgresql://...",
node_addr="127.0.0.1:7001", storage=...)``; this module holds what is not a
runtime: creating or migrating the schema, from Python or the command line::

    python -m dobj.cluster init postgresql://user@host:5432/db
"""
import argparse
import sys
from typing import List, Optional

from . import _dobj

#: The schema version this dobj creates and understands.
SCHEMA_VERSION = 1


def init(url: str, timeout: Optional[float] = None) -> int:
    """Create or migrate the cluster schema at ``url``; the schema version now
    in the database.  A schema of a newer dobj is refused and left alone.
    Every wait is bounded by ``timeout`` seconds (default 2)."""
    return _dobj._cluster_init(url, 0.0 if timeout is None else float(timeout))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dobj.cluster",
                                     description="dobj cluster mode on PostgreSQL")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init", help="create or migrate the schema")
    p.add_argument("url", help="libpq connection string (postgresql://user@host:port/db)")
    p.add_argument("--timeout", type=float, default=None, help="seconds (default 2)")
    args = parser.parse_args(argv)
    try:
        version = init(args.url, args.timeout)
    except _dobj.Error as e:
        print(f"dobj cluster init: {e}", file=sys.stderr)
        return 1
    print(f"dobj cluster schema version {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
