-- Per-merchant rollups of the payment facts for the adoption metrics (docs/metrics.md), kept by
-- materialized views on every insert into qris_payments and noncash_payments. The facts hold
-- each payment and status once (the consumers deduplicate before inserting), so sums over the
-- rollups are exact; always read them with sum() and GROUP BY (SummingMergeTree merges rows of
-- one key eventually, not at once). Keyed by merchant_ref, not by region: the merchant's region
-- and sector are joined at query time from the registry (v_merchant_refs), so a late
-- registration or a move re-attributes history without rewriting anything. The reported region
-- and sector are kept for merchants the registry does not know.
CREATE TABLE IF NOT EXISTS ${database}.payments_merchant_daily ${on_cluster}
(
    event_date Date COMMENT 'WIB date of the payment',
    merchant_ref String COMMENT 'NMID:<nmid> or MID:<acquirer_id>:<merchant_id>',
    channel String COMMENT 'qris, card, emoney or transfer',
    instrument String,
    reported_kab_kota_code String,
    reported_kecamatan_code String,
    reported_sector String,
    success_count UInt64 COMMENT 'payments with status success',
    success_value_idr Int64 COMMENT 'their amount, whole rupiah',
    refund_count UInt64 COMMENT 'rows with status refunded (never in the value)',
    refund_value_idr Int64,
    cancelled_count UInt64,
    failed_count UInt64
)
ENGINE = ${replicated}SummingMergeTree
PARTITION BY toYYYYMM(event_date)
ORDER BY (event_date, merchant_ref, channel, instrument, reported_kab_kota_code, reported_kecamatan_code, reported_sector);
CREATE TABLE IF NOT EXISTS ${database}.payments_merchant_monthly ${on_cluster}
(
    month Date COMMENT 'first day of the WIB calendar month',
    merchant_ref String,
    channel String,
    instrument String,
    reported_kab_kota_code String,
    reported_kecamatan_code String,
    reported_sector String,
    success_count UInt64,
    success_value_idr Int64,
    refund_count UInt64,
    refund_value_idr Int64,
    cancelled_count UInt64,
    failed_count UInt64
)
ENGINE = ${replicated}SummingMergeTree
ORDER BY (month, merchant_ref, channel, instrument, reported_kab_kota_code, reported_kecamatan_code, reported_sector);
CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.mv_qris_merchant_daily ${on_cluster}
TO ${database}.payments_merchant_daily AS
SELECT event_date, concat('NMID:', nmid) AS merchant_ref, 'qris' AS channel,
    concat('qris_', qr_mode) AS instrument, kab_kota_code AS reported_kab_kota_code,
    kecamatan_code AS reported_kecamatan_code, sector AS reported_sector,
    countIf(status = 'success') AS success_count, sumIf(amount_idr, status = 'success') AS success_value_idr,
    countIf(status = 'refunded') AS refund_count, sumIf(amount_idr, status = 'refunded') AS refund_value_idr,
    countIf(status = 'cancelled') AS cancelled_count, countIf(status = 'failed') AS failed_count
FROM ${database}.qris_payments
GROUP BY event_date, merchant_ref, channel, instrument, reported_kab_kota_code, reported_kecamatan_code, reported_sector;
CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.mv_noncash_merchant_daily ${on_cluster}
TO ${database}.payments_merchant_daily AS
SELECT event_date, merchant_ref,
    multiIf(instrument IN ('debit_card', 'credit_card'), 'card', instrument IN ('emoney', 'ewallet'), 'emoney', 'transfer') AS channel,
    instrument, kab_kota_code AS reported_kab_kota_code,
    kecamatan_code AS reported_kecamatan_code, sector AS reported_sector,
    countIf(status = 'success') AS success_count, sumIf(amount_idr, status = 'success') AS success_value_idr,
    countIf(status = 'refunded') AS refund_count, sumIf(amount_idr, status = 'refunded') AS refund_value_idr,
    countIf(status = 'cancelled') AS cancelled_count, countIf(status = 'failed') AS failed_count
FROM ${database}.noncash_payments
GROUP BY event_date, merchant_ref, channel, instrument, reported_kab_kota_code, reported_kecamatan_code, reported_sector;
CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.mv_qris_merchant_monthly ${on_cluster}
TO ${database}.payments_merchant_monthly AS
SELECT toStartOfMonth(event_date) AS month, concat('NMID:', nmid) AS merchant_ref, 'qris' AS channel,
    concat('qris_', qr_mode) AS instrument, kab_kota_code AS reported_kab_kota_code,
    kecamatan_code AS reported_kecamatan_code, sector AS reported_sector,
    countIf(status = 'success') AS success_count, sumIf(amount_idr, status = 'success') AS success_value_idr,
    countIf(status = 'refunded') AS refund_count, sumIf(amount_idr, status = 'refunded') AS refund_value_idr,
    countIf(status = 'cancelled') AS cancelled_count, countIf(status = 'failed') AS failed_count
FROM ${database}.qris_payments
GROUP BY month, merchant_ref, channel, instrument, reported_kab_kota_code, reported_kecamatan_code, reported_sector;
CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.mv_noncash_merchant_monthly ${on_cluster}
TO ${database}.payments_merchant_monthly AS
SELECT toStartOfMonth(event_date) AS month, merchant_ref,
    multiIf(instrument IN ('debit_card', 'credit_card'), 'card', instrument IN ('emoney', 'ewallet'), 'emoney', 'transfer') AS channel,
    instrument, kab_kota_code AS reported_kab_kota_code,
    kecamatan_code AS reported_kecamatan_code, sector AS reported_sector,
    countIf(status = 'success') AS success_count, sumIf(amount_idr, status = 'success') AS success_value_idr,
    countIf(status = 'refunded') AS refund_count, sumIf(amount_idr, status = 'refunded') AS refund_value_idr,
    countIf(status = 'cancelled') AS cancelled_count, countIf(status = 'failed') AS failed_count
FROM ${database}.noncash_payments
GROUP BY month, merchant_ref, channel, instrument, reported_kab_kota_code, reported_kecamatan_code, reported_sector;
-- Backfill from facts that existed before this migration (a deployment upgraded from the
-- release without rollups). Each INSERT runs only while its part of the rollup is empty, so a
-- re-run adds nothing; apply this migration with the consumers stopped (docker-compose's
-- migrate job does), since rows inserted between the CREATE MATERIALIZED VIEW and the backfill
-- would be counted by both.
INSERT INTO ${database}.payments_merchant_daily
SELECT event_date, concat('NMID:', nmid) AS merchant_ref, 'qris' AS channel,
    concat('qris_', qr_mode) AS instrument, kab_kota_code AS reported_kab_kota_code,
    kecamatan_code AS reported_kecamatan_code, sector AS reported_sector,
    countIf(status = 'success') AS success_count, sumIf(amount_idr, status = 'success') AS success_value_idr,
    countIf(status = 'refunded') AS refund_count, sumIf(amount_idr, status = 'refunded') AS refund_value_idr,
    countIf(status = 'cancelled') AS cancelled_count, countIf(status = 'failed') AS failed_count
FROM ${database}.qris_payments
WHERE (SELECT count() FROM ${database}.payments_merchant_daily WHERE channel = 'qris') = 0
GROUP BY event_date, merchant_ref, channel, instrument, reported_kab_kota_code, reported_kecamatan_code, reported_sector;
INSERT INTO ${database}.payments_merchant_daily
SELECT event_date, merchant_ref,
    multiIf(instrument IN ('debit_card', 'credit_card'), 'card', instrument IN ('emoney', 'ewallet'), 'emoney', 'transfer') AS channel,
    instrument, kab_kota_code AS reported_kab_kota_code,
    kecamatan_code AS reported_kecamatan_code, sector AS reported_sector,
    countIf(status = 'success') AS success_count, sumIf(amount_idr, status = 'success') AS success_value_idr,
    countIf(status = 'refunded') AS refund_count, sumIf(amount_idr, status = 'refunded') AS refund_value_idr,
    countIf(status = 'cancelled') AS cancelled_count, countIf(status = 'failed') AS failed_count
FROM ${database}.noncash_payments
WHERE (SELECT count() FROM ${database}.payments_merchant_daily WHERE channel != 'qris') = 0
GROUP BY event_date, merchant_ref, channel, instrument, reported_kab_kota_code, reported_kecamatan_code, reported_sector;
INSERT INTO ${database}.payments_merchant_monthly
SELECT toStartOfMonth(event_date) AS month, concat('NMID:', nmid) AS merchant_ref, 'qris' AS channel,
    concat('qris_', qr_mode) AS instrument, kab_kota_code AS reported_kab_kota_code,
    kecamatan_code AS reported_kecamatan_code, sector AS reported_sector,
    countIf(status = 'success') AS success_count, sumIf(amount_idr, status = 'success') AS success_value_idr,
    countIf(status = 'refunded') AS refund_count, sumIf(amount_idr, status = 'refunded') AS refund_value_idr,
    countIf(status = 'cancelled') AS cancelled_count, countIf(status = 'failed') AS failed_count
FROM ${database}.qris_payments
WHERE (SELECT count() FROM ${database}.payments_merchant_monthly WHERE channel = 'qris') = 0
GROUP BY month, merchant_ref, channel, instrument, reported_kab_kota_code, reported_kecamatan_code, reported_sector;
INSERT INTO ${database}.payments_merchant_monthly
SELECT toStartOfMonth(event_date) AS month, merchant_ref,
    multiIf(instrument IN ('debit_card', 'credit_card'), 'card', instrument IN ('emoney', 'ewallet'), 'emoney', 'transfer') AS channel,
    instrument, kab_kota_code AS reported_kab_kota_code,
    kecamatan_code AS reported_kecamatan_code, sector AS reported_sector,
    countIf(status = 'success') AS success_count, sumIf(amount_idr, status = 'success') AS success_value_idr,
    countIf(status = 'refunded') AS refund_count, sumIf(amount_idr, status = 'refunded') AS refund_value_idr,
    countIf(status = 'cancelled') AS cancelled_count, countIf(status = 'failed') AS failed_count
FROM ${database}.noncash_payments
WHERE (SELECT count() FROM ${database}.payments_merchant_monthly WHERE channel != 'qris') = 0
GROUP BY month, merchant_ref, channel, instrument, reported_kab_kota_code, reported_kecamatan_code, reported_sector;
