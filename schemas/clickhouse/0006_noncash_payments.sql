-- Non-QRIS digital payments (card, e-money, e-wallet, transfer, virtual account): one row per
-- (payment, status), inserted at most once per dedup_key by the noncash-consumer, so plain
-- count()/sum() are exact without FINAL. ReplacingMergeTree on the same key is the safety net.
CREATE TABLE IF NOT EXISTS ${database}.noncash_payments ${on_cluster}
(
    dedup_key String COMMENT 'hex(SHA-256(acquirer_id, merchant_id, reference_number, amount in sen, WIB date, status))[0:32]',
    payment_key String COMMENT 'the same without status: the payment, whatever its status',
    event_id String COMMENT 'publisher event id of the report that landed',
    provider_id String COMMENT 'publisher of the landed report',
    provider_role String COMMENT 'issuer, acquirer or gateway: which party''s report landed',
    instrument String COMMENT 'debit_card, credit_card, emoney, ewallet, bank_transfer or virtual_account',
    reference_number String COMMENT 'reference shared by all parties (card RRN, transfer reference, VA payment request id)',
    approval_code String,
    provider_reference String,
    partner_reference String,
    issuer_id String COMMENT 'payer''s issuer or sending bank, empty if not reported',
    acquirer_id String COMMENT 'merchant''s acquirer or receiving bank',
    merchant_id String COMMENT 'acquirer''s merchant id',
    terminal_id String,
    nmid String COMMENT 'National Merchant ID if reported, else empty',
    merchant_ref String COMMENT 'NMID:<nmid> when the nmid is reported, else MID:<acquirer_id>:<merchant_id>; resolved to the registry merchant by v_payments',
    mcc String COMMENT 'ISO 18245 merchant category code',
    sector String COMMENT 'sector from MCC per schemas/reference/mcc_sector_v1.csv, unknown if unmapped',
    merchant_name String,
    region_code String COMMENT 'Kemendagri code as reported, dotted (kab/kota or kecamatan)',
    province_code String,
    kab_kota_code String,
    kecamatan_code String COMMENT 'empty when reported at kab/kota level',
    amount_idr Int64 COMMENT 'whole rupiah',
    amount_minor UInt8 COMMENT 'sen remainder, normally 0',
    currency String COMMENT 'always IDR in v1',
    status String COMMENT 'success, refunded, cancelled or failed',
    event_time DateTime('UTC') COMMENT 'payment time, UTC, seconds',
    event_time_ms Int64 COMMENT 'payment time, Unix epoch milliseconds',
    event_date Date COMMENT 'payment date in WIB (Asia/Jakarta, UTC+7)',
    payer_hash String COMMENT 'HMAC-SHA256 of the masked card/account under the deployment key; empty if not reported',
    schema_id UInt32,
    source_topic String,
    source_partition Int32,
    source_offset Int64,
    ingested_at DateTime('UTC') COMMENT 'when the consumer inserted the row'
)
ENGINE = ${replicated}ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(event_date)
ORDER BY (event_date, dedup_key);
