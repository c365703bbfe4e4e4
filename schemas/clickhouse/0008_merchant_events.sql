-- The UMKM merchant dimension with its history: one row per (merchant_id, version), inserted at
-- most once by the merchant-consumer. The current state of a merchant is its row with the
-- highest version (view v_merchants_current, migration 0010), whatever order events arrived in.
CREATE TABLE IF NOT EXISTS ${database}.merchant_events ${on_cluster}
(
    dedup_key String COMMENT 'hex(SHA-256(merchant_id, version))[0:32]',
    merchant_id String COMMENT 'the registry''s UMKM id (NIB or registry number): the merchant key',
    version Int64 COMMENT 'state version; the highest is current',
    event_type String COMMENT 'registered, updated or closed',
    status String COMMENT 'active, or closed after a CLOSED event',
    event_id String,
    source_id String COMMENT 'publisher: registry code or acquirer id',
    source_type String COMMENT 'registry or acquirer',
    event_time DateTime('UTC') COMMENT 'when the change happened, UTC',
    event_time_ms Int64,
    event_date Date COMMENT 'WIB date of the change',
    business_name String,
    nmid String COMMENT 'National Merchant ID, empty if none',
    merchant_refs Array(String) COMMENT 'ids payments carry for this merchant: NMID:<nmid>, MID:<acquirer_id>:<merchant_id>',
    kbli_codes Array(String) COMMENT 'KBLI 2020 codes, main activity first',
    kbli_primary String,
    kbli_section String COMMENT 'KBLI 2020 kategori of the main activity, empty if unknown',
    mcc String,
    sector String COMMENT 'from the main KBLI (ref_kbli_sector), else the MCC (ref_mcc_sector), else unknown',
    sector_source String COMMENT 'kbli, mcc or empty',
    scale String COMMENT 'mikro, kecil, menengah, besar (PP 7/2021) or empty',
    qris_criteria String COMMENT 'UMI, UKE, UME, UBE, URE or empty',
    region_code String COMMENT 'Kemendagri code, dotted (kab/kota or kecamatan)',
    province_code String,
    kab_kota_code String,
    kecamatan_code String COMMENT 'empty when registered at kab/kota level',
    onboarding_channel String COMMENT 'acquirer_branch, agent, online, government_program or other',
    onboarding_date Nullable(Date) COMMENT 'WIB date of onboarding / registration, NULL if not reported',
    schema_id UInt32,
    source_topic String,
    source_partition Int32,
    source_offset Int64,
    ingested_at DateTime('UTC') COMMENT 'when the consumer inserted the row'
)
ENGINE = ${replicated}ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(event_date)
ORDER BY (event_date, dedup_key);
