#!/usr/bin/env python3
"""The baseline for umkm-bench (docs/benchmarks.md): the QRIS consumer a team would write in
Python instead of umkm-pulse, doing the same work on the same topic and tables.

confluent-kafka consumes; each message is a Confluent frame (magic 0, schema id) with an Avro
datum that fastavro decodes through the pinned reader schema; the same validation rules and
normalisation as qris-consumer (amount, WIB date, Kemendagri region, MCC sector, HMAC of the
payer id, dedup keys); in-batch dedup (acquirer wins), then against the keys seen and against
ClickHouse; clickhouse-driver inserts the batch (30,000 rows or 1 s, the service's defaults)
and the offsets are committed only after the insert. Invalid records are counted (the bench
data has none; the Rust service dead-letters them).

Writes a JSON report: seconds from partition assignment to the last commit, and CPU seconds.
"""

import argparse
import csv
import datetime as dt
import hashlib
import hmac
import io
import json
import os
import resource
import struct
import time

import fastavro
from clickhouse_driver import Client
from confluent_kafka import Consumer, TopicPartition

COLUMNS = [
    "dedup_key", "payment_key", "event_id", "provider_id", "provider_role", "rrn",
    "issuer_reference", "acquirer_reference", "partner_reference", "issuer_id", "acquirer_id",
    "nmid", "merchant_pan", "mcc", "sector", "merchant_criteria", "merchant_name",
    "merchant_city", "merchant_postal_code", "region_code", "province_code", "kab_kota_code",
    "kecamatan_code", "qr_mode", "amount_idr", "amount_minor", "currency", "status",
    "event_time", "event_time_ms", "event_date", "payer_hash", "schema_id", "source_topic",
    "source_partition", "source_offset", "ingested_at", "payment_amount_idr", "refund_reference",
    "original_reference", "original_reference_no", "original_partner_reference_no",
    "original_event_time_ms",
]
MIDNIGHT_SKEW_MS = 5 * 60 * 1000  # dedup.midnight_skew_ms's default (README "Deduplication keys")
DAY_MS = 86_400_000
EARLIEST_MS = 1_565_974_800_000  # 2019-08-17 WIB: QRIS launch
MAX_SKEW_MS = 10 * 60 * 1000
WIB = dt.timezone(dt.timedelta(hours=7))
EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


class Invalid(Exception):
    pass


def load_reference(ref_dir):
    with open(os.path.join(ref_dir, "kemendagri_provinces_2025.csv")) as f:
        provinces = {r["kode"] for r in csv.DictReader(f)}
    with open(os.path.join(ref_dir, "kemendagri_banten_2025.csv")) as f:
        banten = {r["kode"] for r in csv.DictReader(f)}
    with open(os.path.join(ref_dir, "mcc_sector_v1.csv")) as f:
        mcc = {r["mcc"]: r["sector"] for r in csv.DictReader(f)}
    return provinces, banten, mcc


def key16(domain, parts):
    h = hashlib.sha256(domain.encode())
    for p in parts:
        h.update(b"\x1f")
        h.update(p.encode())
    return h.hexdigest()[:32]


class Qris:
    def __init__(self, ref_dir, pii_key):
        self.provinces, self.banten, self.mcc = load_reference(ref_dir)
        self.pii_key = pii_key

    def region(self, raw):
        s = raw.strip()
        digits = s.replace(".", "")
        ok = digits.isdigit() and len(digits) in (4, 6) and (
            len(s) == len(digits) or len(s) == len(digits) + len(digits) // 2 - 1)
        if not ok:
            raise Invalid("region_format")
        prov, kab = digits[:2], digits[:2] + "." + digits[2:4]
        kec = kab + "." + digits[4:6] if len(digits) == 6 else ""
        code = kec or kab
        if prov not in self.provinces:
            raise Invalid("region_unknown")
        if prov == "36" and code not in self.banten:
            raise Invalid("region_unknown")
        return code, prov, kab, kec

    @staticmethod
    def amount(raw):
        s = raw.strip()
        if not s or s.startswith("-"):
            raise Invalid("amount_format")
        whole, _, frac = s.partition(".")
        if not whole.isdigit() or len(frac) > 2 or (frac and not frac.isdigit()) or len(whole) > 13:
            raise Invalid("amount_format")
        w = int(whole)
        sen = int(frac.ljust(2, "0")) if frac else 0
        if w > 1_000_000_000_000:
            raise Invalid("amount_format")
        if w == 0 and sen == 0:
            raise Invalid("amount_not_positive")
        return w, sen

    def payer_hash(self, raw):
        if raw is None or not raw.strip():
            return ""
        norm = "".join(c for c in raw if not c.isspace() and c != "-").upper()
        return hmac.new(self.pii_key, norm.encode(), hashlib.sha256).hexdigest()

    def process(self, e, key, topic, partition, offset, schema_id, now_ms, now_s):
        """Returns (dedup_key, priority, event_date, row, alt) or raises Invalid; alt is the
        neighbouring date's key and date near a WIB midnight, else None."""
        bad = []
        if not e["event_id"].strip() or len(e["event_id"]) > 128:
            bad.append("event_id")
        if not e["provider_id"].strip():
            bad.append("provider_id")
        rrn = e["rrn"]
        if len(rrn) != 12 or not (rrn.isascii() and rrn.isalnum()):
            bad.append("rrn_format")
        nmid = e["nmid"]
        if not (len(nmid) == 15 and nmid.startswith("ID") and nmid[2:].isdigit()):
            bad.append("nmid_format")
        if key is None:
            bad.append("key_missing")
        elif key != nmid.encode():
            bad.append("key_mismatch")
        pan = e.get("merchant_pan")
        if pan is not None and not (pan.isdigit() and 16 <= len(pan) <= 19 and pan.startswith("9360")):
            bad.append("merchant_pan_format")
        for f in ("issuer_id", "acquirer_id"):
            v = e.get(f)
            if v is not None and not (len(v) == 8 and v.isdigit()):
                bad.append("nns_format")
        pc = e.get("merchant_postal_code")
        if pc is not None and not (len(pc) == 5 and pc.isdigit()):
            bad.append("postal_code_format")
        if not (len(e["mcc"]) == 4 and e["mcc"].isdigit()):
            bad.append("mcc_format")
        if not e["merchant_name"].strip():
            bad.append("merchant_name")
        try:
            region = self.region(e["region_code"])
        except Invalid as x:
            bad.append(str(x))
        try:
            whole, sen = self.amount(e["amount"])
        except Invalid as x:
            bad.append(str(x))
        if e["currency"].strip() not in ("IDR", "360"):
            bad.append("currency")
        t = e["event_time"]
        if isinstance(t, dt.datetime):  # fastavro applies the timestamp-millis logical type
            t = (t - EPOCH_UTC) // dt.timedelta(milliseconds=1)
        if t < EARLIEST_MS or t > now_ms + MAX_SKEW_MS:
            bad.append("event_time_range")
        if bad:
            raise Invalid(",".join(bad))
        wib_date = dt.datetime.fromtimestamp(t / 1000, WIB).date()
        status = e["status"].lower()
        amount_s = str(whole * 100 + sen)
        opt = lambda v: (v or "").strip()  # noqa: E731
        # Refunds (contract revision 2): the payment named by original_rrn, the refunded part.
        fact_whole, fact_sen = whole, sen
        if e.get("refund_amount"):
            fact_whole, fact_sen = self.amount(e["refund_amount"])
        pay_rrn = opt(e.get("original_rrn")) or rrn
        refund_ref = opt(e.get("refund_reference"))
        payment_key = key16("qris-payment-v2", [nmid, pay_rrn, amount_s])

        def fact(d):
            return key16("qris-v2", [payment_key, status, refund_ref, d.isoformat()])

        dedup_key = fact(wib_date)
        into_day = (t + 7 * 3_600_000) % DAY_MS
        alt = None
        if into_day < MIDNIGHT_SKEW_MS:
            d = wib_date - dt.timedelta(days=1)
            alt = (fact(d), d)
        elif DAY_MS - into_day <= MIDNIGHT_SKEW_MS:
            d = wib_date + dt.timedelta(days=1)
            alt = (fact(d), d)
        ot = e.get("original_event_time")
        if isinstance(ot, dt.datetime):
            ot = (ot - EPOCH_UTC) // dt.timedelta(milliseconds=1)
        row = (
            dedup_key, payment_key, e["event_id"], e["provider_id"], e["provider_role"].lower(),
            rrn, opt(e.get("issuer_reference")), opt(e.get("acquirer_reference")),
            opt(e.get("partner_reference")), opt(e.get("issuer_id")), opt(e.get("acquirer_id")),
            nmid, opt(pan), e["mcc"], self.mcc.get(e["mcc"], "unknown"),
            e["merchant_criteria"], e["merchant_name"].strip(), opt(e.get("merchant_city")),
            opt(pc), region[0], region[1], region[2], region[3], e["qr_mode"].lower(),
            fact_whole, fact_sen, "IDR", status, t // 1000, t, wib_date,
            self.payer_hash(e.get("payer_id")), schema_id, topic, partition, offset, now_s,
            whole, refund_ref, opt(e.get("original_rrn")), opt(e.get("original_reference_no")),
            opt(e.get("original_partner_reference_no")), ot or 0,
        )
        priority = 2 if e["provider_role"] == "ACQUIRER" else 1
        return dedup_key, priority, wib_date, row, alt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--clickhouse", default="127.0.0.1:9000", help="native host:port")
    ap.add_argument("--database", required=True)
    ap.add_argument("--events", type=int, required=True, help="stop after this many messages")
    ap.add_argument("--schema", required=True, help="the pinned reader schema (.avsc)")
    ap.add_argument("--reference-dir", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--batch-rows", type=int, default=30_000)
    ap.add_argument("--batch-age", type=float, default=1.0)
    a = ap.parse_args()

    pii_key = os.environ["UMKM_PII_HASH_KEY"].encode()
    with open(a.schema) as f:
        reader = fastavro.parse_schema(json.load(f))
    writers = {4: reader}  # id 4: revision 2 of the contract (schemas/avro/registry.json), what the bench publishes
    qris = Qris(a.reference_dir, pii_key)
    host, port = a.clickhouse.rsplit(":", 1)
    ch = Client(host=host, port=int(port), database=a.database)
    insert_sql = "INSERT INTO qris_payments (%s) VALUES" % ", ".join(COLUMNS)

    assigned_at = []
    c = Consumer({
        "bootstrap.servers": a.brokers,
        "group.id": a.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100,
    })
    c.subscribe([a.topic], on_assign=lambda _c, _p: assigned_at.append(time.monotonic()))

    seen = set()
    batch, batch_started, offsets = [], None, {}
    consumed, inserted, invalid, dups = 0, 0, 0, 0
    deadline = time.monotonic() + 1800

    def flush():
        nonlocal batch, batch_started, inserted, dups
        # One fact per key; near a WIB midnight also one per pair whose alts are each other's
        # keys (the consumer's union-find in resolve_in_batch, README "Deduplication keys").
        parent = list(range(len(batch)))
        best = list(range(len(batch)))

        def root(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        def union(a, b):
            ra, rb = root(a), root(b)
            if ra != rb:
                wa, wb = best[ra], best[rb]
                pa, pb = batch[wa][1], batch[wb][1]
                parent[rb] = ra
                best[ra] = wa if pa > pb else wb if pb > pa else min(wa, wb)

        by_key, near = {}, {}
        for i, (k, _prio, _d, _r, alt) in enumerate(batch):
            if k in by_key:
                union(by_key[k], i)
            else:
                by_key[k] = i
            if alt is not None:
                if alt[0] in near:
                    union(near[alt[0]], i)
                near.setdefault(k, i)
        kept = sorted(best[i] for i in range(len(batch)) if parent[i] == i)  # arrival order
        winners = [batch[j] for j in kept if batch[j][0] not in seen]
        dups += len(batch) - len(winners)
        if winners:
            dates = sorted({w[2] for w in winners})
            # The keys go as an external table (an IN literal of 30,000 keys is slow to parse
            # and exceeds max_ast_elements), as qris-consumer sends them.
            found = ch.execute(
                "SELECT dedup_key FROM qris_payments WHERE event_date IN %(d)s AND dedup_key IN _keys",
                {"d": tuple(dates)},
                external_tables=[{
                    "name": "_keys",
                    "structure": [("dedup_key", "String")],
                    "data": [{"dedup_key": w[0]} for w in winners],
                }],
            )
            existing = {r[0] for r in found}
            alts = [w for w in winners if w[4] is not None]
            if alts:
                found = ch.execute(
                    "SELECT dedup_key, toUInt32(event_time) FROM qris_payments "
                    "WHERE event_date IN %(d)s AND dedup_key IN _keys",
                    {"d": tuple(sorted({w[4][1] for w in alts}))},
                    external_tables=[{
                        "name": "_keys",
                        "structure": [("dedup_key", "String")],
                        "data": [{"dedup_key": w[4][0]} for w in alts],
                    }],
                )
                times = {r[0]: r[1] for r in found}
                for w in alts:
                    if w[4][0] in times:
                        later = max(w[2], w[4][1])
                        midnight = (later - dt.date(1970, 1, 1)).days * 86_400 - 7 * 3600
                        if abs(times[w[4][0]] - midnight) <= MIDNIGHT_SKEW_MS // 1000:
                            existing.add(w[0])
            rows = [w[3] for w in winners if w[0] not in existing]
            dups += len(winners) - len(rows)
            if rows:
                ch.execute(insert_sql, rows)
                inserted += len(rows)
            seen.update(w[0] for w in winners)
        if offsets:
            c.commit(offsets=[TopicPartition(a.topic, p, o + 1) for p, o in offsets.items()],
                     asynchronous=False)
        batch, batch_started = [], None
        offsets.clear()

    while consumed < a.events:
        if time.monotonic() > deadline:
            raise SystemExit("baseline: timed out")
        msgs = c.consume(num_messages=10_000, timeout=0.2)
        now = time.time()
        now_ms, now_s = int(now * 1000), int(now)
        for m in msgs:
            if m.error():
                raise SystemExit("baseline: %s" % m.error())
            consumed += 1
            offsets[m.partition()] = m.offset()
            v = m.value()
            try:
                if len(v) < 5 or v[0] != 0:
                    raise Invalid("frame")
                (schema_id,) = struct.unpack(">I", v[1:5])
                writer = writers.get(schema_id)
                if writer is None:
                    raise Invalid("schema_unknown")
                e = fastavro.schemaless_reader(io.BytesIO(v[5:]), writer, reader)
                k, prio, day, row, alt = qris.process(
                    e, m.key(), m.topic(), m.partition(), m.offset(), schema_id, now_ms, now_s)
            except Invalid:
                invalid += 1
                continue
            if batch_started is None:
                batch_started = time.monotonic()
            batch.append((k, prio, day, row, alt))
        if batch and (len(batch) >= a.batch_rows
                      or time.monotonic() - batch_started >= a.batch_age
                      or consumed >= a.events):
            flush()
        elif not batch and offsets and consumed >= a.events:
            flush()
    if batch or offsets:
        flush()
    done = time.monotonic()
    c.close()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "seconds": done - assigned_at[0] if assigned_at else None,
        "cpu_seconds": ru.ru_utime + ru.ru_stime,
        "consumed": consumed,
        "inserted": inserted,
        "duplicates": dups,
        "invalid": invalid,
    }
    with open(a.report, "w") as f:
        json.dump(report, f)
    print("baseline: %s" % json.dumps(report))


if __name__ == "__main__":
    main()
