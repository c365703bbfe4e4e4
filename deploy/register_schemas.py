"""Registers the Avro contracts with a Confluent-compatible schema registry (docker-compose's
schema-init service). Publishers produce with the ids the registry assigns; the consumers fetch
writer schemas by id from the same registry. Idempotent: the registry returns the existing id."""
import json
import os
import sys
import time
import urllib.request

REGISTRY = os.environ.get("SCHEMA_REGISTRY_URL", "http://schema-registry:8081")
SCHEMAS = os.environ.get("SCHEMAS_DIR", "/schemas/avro")
# In this order, so that a fresh registry assigns the ids of schemas/avro/registry.json: revision 1
# of the payment contracts (1, 2), the merchant contract (3), then revision 2 of the payment
# contracts (4, 5) as the subjects' next versions (backward compatible: optional fields only).
SUBJECTS = [
    ("payments.qris.v1-value", "qris_payment.rev1.avsc"),
    ("payments.noncash.v1-value", "noncash_payment.rev1.avsc"),
    ("merchants.registry.v1-value", "merchant_event.avsc"),
    ("payments.qris.v1-value", "qris_payment.avsc"),
    ("payments.noncash.v1-value", "noncash_payment.avsc"),
]

for subject, file in SUBJECTS:
    body = json.dumps({"schemaType": "AVRO", "schema": open(os.path.join(SCHEMAS, file)).read()}).encode()
    for attempt in range(30):
        try:
            req = urllib.request.Request(
                f"{REGISTRY}/subjects/{subject}/versions",
                data=body,
                headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
            )
            with urllib.request.urlopen(req, timeout=10) as r:
                print(subject, "->", json.load(r))
            break
        except OSError as e:
            print(f"registry not ready ({e}); retrying", file=sys.stderr)
            time.sleep(min(2 ** attempt, 10))
    else:
        sys.exit(f"could not register {subject}")
