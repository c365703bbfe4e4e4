-- The dashboards' daily table: merchant activity per WIB day over the last 120 days of data
-- (ending at the latest event_date in payments_merchant_daily), with merchant_key, region and
-- sector resolved through the registry like adoption_merchant_monthly. It serves the day and week
-- panels and the trailing-30-day adoption rate. Derived data, rebuilt by `<service>
-- refresh-metrics` together with the monthly snapshot (umkm_core::metrics::DAILY); a plain
-- MergeTree on purpose: every replica of a cluster rebuilds its own copy.
CREATE TABLE IF NOT EXISTS ${database}.adoption_merchant_daily ${on_cluster}
(
    event_date Date COMMENT 'WIB calendar day of the payments',
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
PARTITION BY toYYYYMM(event_date)
ORDER BY (event_date, kab_kota_code, sector, channel, merchant_key);
