"""Cluster mode on PostgreSQL (docs/cluster.md).

A runtime joins a cluster with ``dobj.Runtime(cluster="postgresql://...",
node_addr="127.0.0.1:7001", storage=...)``, or a project with ``dobj dev
--cluster URL`` / ``DOBJ_CLUSTER_URL`` / a ``[dobj.cluster]`` table; this
module holds what is not a runtime: creating or migrating the schema, from
Python or the command line::

    dobj cluster init postgresql://user@host:5432/db
    python -m dobj.cluster init postgresql://user@host:5432/db

Exit status of ``init``: 0 done (the schema version is printed), 2 a bad
URL or command line, 3 the database's schema is newer than this dobj's, or
what carries dobj's names in it is not dobj's (left alone), 1 anything else
(the database cannot be reached, ...).
"""
import argparse
import sys
from typing import List, Optional

from . import _dobj

#: The schema version this dobj creates and understands (the core's).
SCHEMA_VERSION: int = _dobj._CLUSTER_SCHEMA_VERSION

# dobj_cluster_init's codes (dobj.h) -> exit status.
_EARG, _ESTATE = -5, -12


def init(url: str, timeout: Optional[float] = None) -> int:
    """Create or migrate the cluster schema at ``url``; the schema version now
    in the database.  A schema of a newer dobj is refused and left alone.
    Every wait is bounded by ``timeout`` seconds (default 2; the rule of
    ``cluster_timeout=``, so 0 is refused)."""
    return _dobj._cluster_init(url, timeout)


def add_parser(sub: "argparse._SubParsersAction", prog: str) -> None:
    """The ``init`` command, for ``python -m dobj.cluster`` and ``dobj cluster``."""
    p = sub.add_parser("init", help="create or migrate the schema",
                       description="Create or migrate dobj's cluster schema in a PostgreSQL "
                       "database (a runtime also does it on its first start).",
                       epilog="exit status: 0 done, 1 the database cannot be reached (or "
                       "another failure), 2 a bad URL or command line, 3 the database's "
                       "schema is newer than this dobj's, or what carries dobj's names in it "
                       "is not dobj's (left alone)")
    p.add_argument("url", help="libpq connection string (postgresql://user@host:port/db)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="bound on connecting and on each statement (default 2)")
    p.set_defaults(prog=prog)


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``init``: one line on stdout (done) or stderr (why not)."""
    # The core checks the URL and the timeout (the rule of every source).
    code, version, msg = _dobj._cluster_init_status(args.url, args.timeout, "--timeout")
    if code < 0:
        sys.stderr.write(f"{args.prog} init: {msg.removeprefix('cluster: ')}\n")
        return 2 if code == _EARG else 3 if code == _ESTATE else 1
    print(f"dobj cluster schema version {version}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dobj.cluster",
                                     description="dobj cluster mode on PostgreSQL")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub, "python -m dobj.cluster")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
