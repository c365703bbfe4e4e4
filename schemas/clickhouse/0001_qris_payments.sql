-- QRIS payments: one row per (payment, status). The consumer inserts each dedup_key at most
-- once (it checks this table before every insert), so plain count()/sum() are exact without
-- FINAL. ReplacingMergeTree on the same key is the safety net: should a duplicate ever land
-- (e.g. a manual re-insert), merges collapse it.
CREATE TABLE IF NOT EXISTS ${database}.qris_payments ${on_cluster}
(
    dedup_key String COMMENT 'hex(SHA-256(nmid, rrn, amount in sen, WIB date, status))[0:32]: one payment in one status',
    payment_key String COMMENT 'hex(SHA-256(nmid, rrn, amount in sen, WIB date))[0:32]: the payment, whatever its status',
    event_id String COMMENT 'publisher event id of the report that landed',
    provider_id String COMMENT 'publisher of the landed report (NNS or gateway code)',
    provider_role String COMMENT 'issuer or acquirer: which party''s report landed',
    rrn String COMMENT 'retrieval reference number',
    issuer_reference String COMMENT 'issuer transaction reference, empty if not reported',
    acquirer_reference String COMMENT 'acquirer/provider reference (SNAP referenceNo), empty if not reported',
    partner_reference String COMMENT 'merchant/partner reference, empty if not reported',
    issuer_id String COMMENT 'issuer NNS, empty if not reported',
    acquirer_id String COMMENT 'acquirer NNS, empty if not reported',
    nmid String COMMENT 'National Merchant ID',
    merchant_pan String COMMENT 'merchant PAN (identifies the merchant, not the payer)',
    mcc String COMMENT 'ISO 18245 merchant category code',
    sector String COMMENT 'sector from MCC per schemas/reference/mcc_sector_v1.csv, unknown if unmapped',
    merchant_criteria String COMMENT 'QRIS criteria UMI/UKE/UME/UBE/URE',
    merchant_name String,
    merchant_city String,
    merchant_postal_code String,
    region_code String COMMENT 'Kemendagri code as reported, dotted (kab/kota or kecamatan)',
    province_code String COMMENT 'Kemendagri province, PP',
    kab_kota_code String COMMENT 'Kemendagri kab/kota, PP.KK',
    kecamatan_code String COMMENT 'Kemendagri kecamatan, PP.KK.CC, empty when reported at kab/kota level',
    qr_mode String COMMENT 'mpm_static, mpm_dynamic, cpm or ttm',
    amount_idr Int64 COMMENT 'whole rupiah',
    amount_minor UInt8 COMMENT 'sen (1/100 rupiah) remainder, normally 0',
    currency String COMMENT 'ISO 4217, always IDR in v1',
    status String COMMENT 'success, refunded, cancelled or failed',
    event_time DateTime('UTC') COMMENT 'payment time, UTC, seconds',
    event_time_ms Int64 COMMENT 'payment time, Unix epoch milliseconds',
    event_date Date COMMENT 'payment date in WIB (Asia/Jakarta, UTC+7)',
    payer_hash String COMMENT 'HMAC-SHA256 of the payer identifier under the deployment key; empty if not reported',
    schema_id UInt32 COMMENT 'registry id of the writer schema',
    source_topic String,
    source_partition Int32,
    source_offset Int64,
    ingested_at DateTime('UTC') COMMENT 'when the consumer inserted the row'
)
ENGINE = ${replicated}ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(event_date)
ORDER BY (event_date, dedup_key);
