"""ctx.storage.sql: exec, cursors, refusals."""
import pytest

import dobj
from storage_util import Box, run


@pytest.fixture
def box(rt):
    return rt.bind("BOX", Box).get_by_name("sql")


async def test_exec_bindings_and_cursor(box):
    def body(self):
        sql = self.ctx.storage.sql
        sql.exec("CREATE TABLE t (i INTEGER, r REAL, s TEXT, b BLOB, n)")
        w = sql.exec("INSERT INTO t VALUES (?, ?, ?, ?, ?), (?, ?, ?, ?, ?)",
                     1, 1.5, "é", b"\x00\xff", None, True, 2.0, "x", bytearray(b"y"), 2**62)
        cur = sql.exec("SELECT * FROM t ORDER BY i")
        return (w.rows_written, cur.column_names, cur.to_array(), cur.rows_read,
                sql.exec("SELECT count(*) AS n FROM t").one())

    written, names, rows, read, one = await run(box, body)
    assert written == 2
    assert names == ["i", "r", "s", "b", "n"]
    assert rows == [{"i": 1, "r": 1.5, "s": "é", "b": b"\x00\xff", "n": None},
                    {"i": 1, "r": 2.0, "s": "x", "b": b"y", "n": 2**62}]
    assert read >= 2
    assert one == {"n": 2}


# Statements whose rows_read matches workerd's rowsRead (measured with workerd
# 2026-11-17; test_interop.py compares them with a live workerd).  Sorts,
# count(*), joins and empty tables read more in workerd (docs/python.md).
ROWS_READ_CASES = [
    ("SELECT * FROM t", 3, 0),
    ("SELECT * FROM t WHERE score > 2", 3, 0),
    ("SELECT * FROM t WHERE id = 2", 1, 0),
    ("SELECT * FROM t LIMIT 1", 1, 0),
    ("UPDATE t SET score = 5 WHERE name = 'b'", 3, 1),
]
ROWS_READ_SETUP = [
    "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score INTEGER)",
    "INSERT INTO t (name, score) VALUES ('a', 1), ('b', 2), ('c', 3)",
]


async def test_rows_read_counts_rows_as_workerd_does(box):
    # It was the returned rows plus the scan steps: 5 for a 3-row SELECT.
    def body(self):
        sql = self.ctx.storage.sql
        for q in ROWS_READ_SETUP:
            sql.exec(q)
        return [(q, c.rows_read, c.rows_written)
                for q, c in ((q, sql.exec(q)) for q, _, _ in ROWS_READ_CASES)]

    assert await run(box, body) == ROWS_READ_CASES

async def test_iteration_raw_and_one(box):
    def body(self):
        sql = self.ctx.storage.sql
        sql.exec("CREATE TABLE t (a, b)")
        for i in range(3):
            sql.exec("INSERT INTO t VALUES (?, ?)", i, str(i))
        cur = sql.exec("SELECT a, b FROM t ORDER BY a")
        first = next(cur)
        raw = cur.raw()
        second = next(raw)
        rest = list(cur)
        out = [first, second, rest, list(sql.exec("SELECT a FROM t WHERE a = 9"))]
        with pytest.raises(dobj.Error, match="but got no results"):
            sql.exec("SELECT a FROM t WHERE a = 9").one()
        with pytest.raises(dobj.Error, match="but got multiple results"):
            sql.exec("SELECT a FROM t").one()
        out.append(sql.exec("SELECT a, b FROM t WHERE a = 1").raw().to_array())
        out.append(sql.database_size > 0)
        return out

    first, second, rest, empty, raw_rows, size = await run(box, body)
    assert first == {"a": 0, "b": "0"}
    assert second == [1, "1"]
    assert rest == [{"a": 2, "b": "2"}]
    assert empty == []
    assert raw_rows == [[1, "1"]]
    assert size


@pytest.mark.parametrize("query,msg", [
    ("BEGIN", "transaction"), ("COMMIT", "transaction"), ("SAVEPOINT x", "transaction"),
    ("ROLLBACK", "transaction"), ("SELECT * FROM _cf_KV", "_cf_"),
    ("CREATE TABLE _cf_mine (x)", "_cf_"), ("SELEC 1", "syntax"),
    ("CREATE TEMP TRIGGER t AFTER INSERT ON main._cf_KV BEGIN SELECT 1; END", "TEMP"),
    ("CREATE TEMP TABLE _cf_x (a)", "TEMP"), ('SELECT * FROM main."_CF_kv"', "_cf_KV is not allowed"),
    ("CREATE TABLE t (a); ALTER TABLE t RENAME TO [_cf_t]", "_cf_t"), ("VACUUM INTO '/tmp/dobj-copy.sqlite'", "VACUUM"),
    ("SELECT 1;\x00", "NUL character (byte 10)"), ("\x00", "NUL character (byte 1)"),
])
async def test_refused_and_bad_queries(box, query, msg):
    def body(self):
        with pytest.raises((ValueError, dobj.Error)) as info:
            self.ctx.storage.sql.exec(query)
        return str(info.value)

    assert msg in await run(box, body)


async def test_bad_bindings(box):
    def body(self):
        sql = self.ctx.storage.sql
        with pytest.raises(TypeError, match="cannot bind a value of type list to SQL"):
            sql.exec("SELECT ?", [1])
        with pytest.raises(OverflowError):
            sql.exec("SELECT ?", 2**64)
        with pytest.raises(ValueError):
            sql.exec("SELECT ?, ?", 1)

    await run(box, body)


async def test_sql_and_kv_share_the_transaction_and_the_database(rt, tmp_path):
    rt2 = dobj.Runtime(storage=str(tmp_path))
    stub = rt2.bind("BOX", Box).get_by_name("shared")

    def body(self):
        s = self.ctx.storage
        s.sql.exec("CREATE TABLE t (x)")

        def fn(txn):
            s.sql.exec("INSERT INTO t VALUES (1)")
            txn.put("k", 1)
            txn.rollback()
        s.transaction_sync(fn)
        return s.sql.exec("SELECT count(*) AS n FROM t").one()["n"], s.get("k")

    assert await run(stub, body) == (0, None)
    rt2.close()
