-- The dashboards' table: merchant activity per WIB month with merchant_key, region and sector
-- already resolved through the registry, so panels over a year aggregate without a join
-- (docs/metrics.md "Speed"). Derived data: `<service> refresh-metrics` rebuilds it from
-- v_merchant_activity_monthly and swaps it in (docker-compose runs that every 5 minutes), so it
-- lags the facts by at most one refresh. A plain MergeTree on purpose: every replica of a
-- cluster rebuilds its own copy.
CREATE TABLE IF NOT EXISTS ${database}.adoption_merchant_monthly ${on_cluster}
(
    month Date COMMENT 'first day of the WIB calendar month',
    merchant_key String COMMENT 'registry merchant_id, or the merchant_ref of an unregistered merchant',
    merchant_registered UInt8 COMMENT '1 when the registry knows the merchant',
    province_code String COMMENT 'Kemendagri province code (merchant''s current registry state)',
    kab_kota_code String COMMENT 'Kemendagri kab/kota code PP.KK',
    kecamatan_code String COMMENT 'Kemendagri kecamatan code PP.KK.CC, empty when unknown',
    sector String COMMENT 'umkm-pulse sector',
    channel String COMMENT 'qris, card, emoney or transfer',
    success_count UInt64 COMMENT 'successful payments',
    success_value_idr Int64 COMMENT 'value of the successful payments, rupiah',
    refund_count UInt64 COMMENT 'refunds (never part of the value)',
    refund_value_idr Int64 COMMENT 'value of the refunds, rupiah',
    cancelled_count UInt64 COMMENT 'cancelled payments',
    failed_count UInt64 COMMENT 'failed payments',
    refreshed_at DateTime('UTC') COMMENT 'when refresh-metrics built this copy'
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(month)
ORDER BY (month, kab_kota_code, sector, channel, merchant_key);
