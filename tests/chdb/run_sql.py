"""Runs SQL statements (separated by a line holding only ';;') in chDB, the in-process current
ClickHouse, and fails on the first error. Further arguments are checks "SQL=EXPECTED": each query
must return exactly EXPECTED (CSV, trimmed). Used by the migrations test."""
import sys

import chdb
from chdb.session import Session

path = sys.argv[1]
statements = [s.strip() for s in open(path, encoding="utf-8").read().split("\n;;\n") if s.strip()]
sess = Session()
print(f"chdb {chdb.__version__}: running {len(statements)} statements", flush=True)
for i, stmt in enumerate(statements, 1):
    try:
        sess.query(stmt)
    except Exception as e:  # chDB raises on any server-side error
        print(f"statement {i} failed: {e}\n---\n{stmt}", file=sys.stderr)
        sys.exit(1)
for check in sys.argv[2:]:
    sql, expected = check.rsplit("=", 1)
    got = str(sess.query(sql, "CSV")).strip()
    if got != expected:
        print(f"check failed: {sql} returned {got!r}, expected {expected!r}", file=sys.stderr)
        sys.exit(1)
print(sess.query("SELECT version()", "CSV"), end="")
print("ok")
