"""Runs SQL statements (separated by a line holding only ';;') in chDB, the in-process current
ClickHouse, and fails on the first error. Used by the migrations test."""
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
print(sess.query("SELECT version()", "CSV"), end="")
print("ok")
