-- The analysts' and Grafana's surface for the adoption metrics (docs/metrics.md): merchant
-- activity per day and per month with the merchant resolved through the registry (history
-- follows the merchant), and the UMKM population denominators. SQL accepted by ClickHouse 18.16
-- and current servers.

-- UMKM population per region from public sources, versioned (BRIEF.md 5.2). Banten publishes a
-- province total only; per kab/kota rows are added here when a source gives them.
CREATE TABLE IF NOT EXISTS ${database}.ref_umkm_population ${on_cluster}
(
    version String COMMENT 'source and vintage',
    region_code String COMMENT 'Kemendagri code: PP, PP.KK or PP.KK.CC',
    level String COMMENT 'provinsi, kab_kota or kecamatan',
    umkm_count UInt64 COMMENT 'number of UMKM (micro + small + medium)',
    as_of Date,
    source String,
    loaded_at DateTime('UTC')
)
ENGINE = ${replicated}ReplacingMergeTree(loaded_at)
ORDER BY (version, region_code);
INSERT INTO ${database}.ref_umkm_population (version, region_code, level, umkm_count, as_of, source, loaded_at)
SELECT tupleElement(r, 1), tupleElement(r, 2), tupleElement(r, 3), tupleElement(r, 4), toDate(tupleElement(r, 5)), tupleElement(r, 6), now()
FROM (SELECT arrayJoin([
    ('dinkopukm-banten-2023-03', '36', 'provinsi', toUInt64(800000), '2023-03-01', 'Kadis Koperasi dan UMKM Banten, Mar 2023: around 800 ribu UMKM across 8 kab/kota (cipasera.com)'),
    ('bps-banten-2020-02', '36', 'provinsi', toUInt64(984118), '2020-02-01', 'BPS Banten cited Feb 2020 (UU 20/2008 thresholds): 823,496 micro + 153,313 small + 7,309 medium (biem.co)')
]) AS r)
WHERE (tupleElement(r, 1), tupleElement(r, 2)) NOT IN (SELECT version, region_code FROM ${database}.ref_umkm_population);

-- One row per month, merchant, channel and instrument (and reported region/sector): what the
-- merchant took digitally that month. merchant_key, region and sector as in v_payments.
CREATE VIEW IF NOT EXISTS ${database}.v_merchant_activity_monthly ${on_cluster} AS
SELECT
    month,
    merchant_ref,
    if(m_merchant_id = '', merchant_ref, m_merchant_id) AS merchant_key,
    toUInt8(m_merchant_id != '') AS merchant_registered,
    if(m_merchant_id = '', substring(r_kab_kota_code, 1, 2), m_province_code) AS province_code,
    if(m_merchant_id = '', r_kab_kota_code, m_kab_kota_code) AS kab_kota_code,
    if(m_merchant_id = '', r_kecamatan_code, m_kecamatan_code) AS kecamatan_code,
    if(m_merchant_id = '' OR m_sector = 'unknown', r_sector, m_sector) AS sector,
    channel,
    instrument,
    s_success AS success_count,
    s_success_value AS success_value_idr,
    s_refund AS refund_count,
    s_refund_value AS refund_value_idr,
    s_cancelled AS cancelled_count,
    s_failed AS failed_count
FROM
(
    SELECT month, merchant_ref, channel, instrument, reported_kab_kota_code AS r_kab_kota_code,
        reported_kecamatan_code AS r_kecamatan_code, reported_sector AS r_sector,
        sum(success_count) AS s_success, sum(success_value_idr) AS s_success_value,
        sum(refund_count) AS s_refund, sum(refund_value_idr) AS s_refund_value,
        sum(cancelled_count) AS s_cancelled, sum(failed_count) AS s_failed
    FROM ${database}.payments_merchant_monthly
    GROUP BY month, merchant_ref, channel, instrument, r_kab_kota_code, r_kecamatan_code, r_sector
) AS umkm_activity_
ANY LEFT JOIN ${database}.v_merchant_refs AS umkm_refs_ USING merchant_ref;

-- The same per WIB day (trailing-30-day and daily panels).
CREATE VIEW IF NOT EXISTS ${database}.v_merchant_activity_daily ${on_cluster} AS
SELECT
    event_date,
    merchant_ref,
    if(m_merchant_id = '', merchant_ref, m_merchant_id) AS merchant_key,
    toUInt8(m_merchant_id != '') AS merchant_registered,
    if(m_merchant_id = '', substring(r_kab_kota_code, 1, 2), m_province_code) AS province_code,
    if(m_merchant_id = '', r_kab_kota_code, m_kab_kota_code) AS kab_kota_code,
    if(m_merchant_id = '', r_kecamatan_code, m_kecamatan_code) AS kecamatan_code,
    if(m_merchant_id = '' OR m_sector = 'unknown', r_sector, m_sector) AS sector,
    channel,
    instrument,
    s_success AS success_count,
    s_success_value AS success_value_idr,
    s_refund AS refund_count,
    s_refund_value AS refund_value_idr,
    s_cancelled AS cancelled_count,
    s_failed AS failed_count
FROM
(
    SELECT event_date, merchant_ref, channel, instrument, reported_kab_kota_code AS r_kab_kota_code,
        reported_kecamatan_code AS r_kecamatan_code, reported_sector AS r_sector,
        sum(success_count) AS s_success, sum(success_value_idr) AS s_success_value,
        sum(refund_count) AS s_refund, sum(refund_value_idr) AS s_refund_value,
        sum(cancelled_count) AS s_cancelled, sum(failed_count) AS s_failed
    FROM ${database}.payments_merchant_daily
    GROUP BY event_date, merchant_ref, channel, instrument, r_kab_kota_code, r_kecamatan_code, r_sector
) AS umkm_activity_
ANY LEFT JOIN ${database}.v_merchant_refs AS umkm_refs_ USING merchant_ref;
