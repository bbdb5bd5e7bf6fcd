"""Cluster mode under hostile use (docs/cluster.md): a peer whose network
thread answers pings while its runtime is stuck, and the bounds of the
caller's wait."""
import asyncio
import os
import time

import pytest

import dobj
from pg_util import available
from route_util import Node

pytestmark = pytest.mark.skipif(not available(), reason="PostgreSQL (Debian: postgresql) not installed")

HOSTILE_NODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hostile_node.py")


@pytest.fixture
def node(pg, tmp_path):
    n = Node(pg, tmp_path / "a", script=HOSTILE_NODE)
    yield n
    n.close()


async def test_a_call_to_a_node_whose_runtime_is_stuck_fails_retryable_at_the_call_timeout(pg, node, tmp_path):
    """The node answers pings (its network thread runs) but its runtime does
    not: the caller's wait was unbounded (the answer came whenever the
    handler let go, or never); now it ends at the call timeout."""
    import hostile_node
    node.send(name="stuck-obj", method="add", args=[1])
    assert node.reply()["ok"] == 1                     # the node owns it
    rt = dobj.Runtime(storage=str(tmp_path / "c"), cluster=pg.url, cluster_ttl=1.5,
                      cluster_call_timeout=1.0)  # a client: its calls go to the owner
    try:
        ns = rt.bind("ROUTE", hostile_node.Box)
        node.send(name="stuck-obj", method="stuck", args=[4])  # the node's loop stops
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        with pytest.raises(dobj.Error) as e:
            await ns.get_by_name("stuck-obj").add(1)
        took = time.monotonic() - t0
        assert e.value.retryable is True
        assert "did not answer the call within 1 s (the call timeout): it may or may not have run" in str(e.value)
        assert 0.9 < took < 3, took
    finally:
        rt.close()


def test_the_call_timeout_is_a_cluster_setting(tmp_path, monkeypatch):
    """call_timeout resolves like the other settings: argument, environment, file."""
    (tmp_path / "wrangler.toml").write_text('name = "w"\n[dobj.cluster]\nurl = "postgresql://a@b/c"\n'
                                            'call_timeout = 12\n')
    assert dobj.load_config(str(tmp_path)).cluster.call_timeout == 12
    monkeypatch.setenv("DOBJ_CLUSTER_CALL_TIMEOUT", "7.5")
    assert dobj.load_config(str(tmp_path)).cluster.call_timeout == 7.5
    monkeypatch.setenv("DOBJ_CLUSTER_CALL_TIMEOUT", "inf")
    with pytest.raises(dobj.ConfigError, match="environment variable DOBJ_CLUSTER_CALL_TIMEOUT: must be a finite"):
        dobj.load_config(str(tmp_path))
    monkeypatch.delenv("DOBJ_CLUSTER_CALL_TIMEOUT")
    with pytest.raises(dobj.Error, match="cluster_call_timeout: the call timeout must be a number of seconds "
                                         "from 0.01 to 86400"):
        dobj.Runtime(storage=str(tmp_path), cluster="postgresql://a@127.0.0.1:1/c", cluster_call_timeout=1e6)
