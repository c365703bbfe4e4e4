-- The canonical model analysts, Grafana and the metrics query (README "Canonical payment model").
-- Plain views: nothing is copied, so a merchant registered after its payments, or updated out of
-- order, is reflected at the next query. SQL accepted by ClickHouse 18.16 and current servers.

-- Current state of every merchant: its row with the highest version.
CREATE VIEW IF NOT EXISTS ${database}.v_merchants_current ${on_cluster} AS
SELECT
    merchant_id, version, status, event_type AS last_event_type,
    event_time AS updated_at, business_name, nmid, merchant_refs, kbli_codes, kbli_primary,
    kbli_section, mcc, sector, sector_source, scale, qris_criteria, region_code, province_code,
    kab_kota_code, kecamatan_code, onboarding_channel, onboarding_date, source_id, source_type
FROM ${database}.merchant_events
WHERE (merchant_id, version) IN
    (SELECT merchant_id, max(version) FROM ${database}.merchant_events GROUP BY merchant_id);

-- Which merchant a payment's merchant_ref (NMID:<nmid> or MID:<acquirer>:<mid>) belongs to, by
-- the merchants' current state. Should two merchants claim one ref, the most recently changed
-- merchant wins.
CREATE VIEW IF NOT EXISTS ${database}.v_merchant_refs ${on_cluster} AS
SELECT
    merchant_ref,
    argMax(merchant_id, t) AS m_merchant_id,
    argMax(region_code, t) AS m_region_code,
    argMax(province_code, t) AS m_province_code,
    argMax(kab_kota_code, t) AS m_kab_kota_code,
    argMax(kecamatan_code, t) AS m_kecamatan_code,
    argMax(sector, t) AS m_sector
FROM
(
    SELECT merchant_id, toUInt64(updated_at) AS t, region_code, province_code, kab_kota_code,
        kecamatan_code, sector, arrayJoin(merchant_refs) AS merchant_ref
    FROM ${database}.v_merchants_current
)
GROUP BY merchant_ref;

-- Every digital payment, QRIS and non-cash, in one shape. merchant_key is the registry's
-- merchant_id when the payment's merchant_ref is registered, else the merchant_ref itself;
-- region and sector follow the registered merchant's current state, else the payment's own
-- report (kept in reported_region_code / reported_sector).
CREATE VIEW IF NOT EXISTS ${database}.v_payments ${on_cluster} AS
SELECT
    channel,
    instrument,
    source_table,
    payment_key,
    dedup_key,
    provider_role,
    merchant_ref,
    if(m_merchant_id = '', merchant_ref, m_merchant_id) AS merchant_key,
    toUInt8(m_merchant_id != '') AS merchant_registered,
    if(m_merchant_id = '', p_region_code, m_region_code) AS region_code,
    if(m_merchant_id = '', p_province_code, m_province_code) AS province_code,
    if(m_merchant_id = '', p_kab_kota_code, m_kab_kota_code) AS kab_kota_code,
    if(m_merchant_id = '', p_kecamatan_code, m_kecamatan_code) AS kecamatan_code,
    if(m_merchant_id = '' OR m_sector = 'unknown', p_sector, m_sector) AS sector,
    p_region_code AS reported_region_code,
    p_sector AS reported_sector,
    mcc,
    amount_idr,
    amount_minor,
    status,
    event_time,
    event_date,
    payer_hash,
    ingested_at
FROM
(
    SELECT
        'qris' AS channel, concat('qris_', qr_mode) AS instrument, 'qris_payments' AS source_table,
        payment_key, dedup_key, provider_role, concat('NMID:', nmid) AS merchant_ref,
        region_code AS p_region_code, province_code AS p_province_code,
        kab_kota_code AS p_kab_kota_code, kecamatan_code AS p_kecamatan_code, sector AS p_sector,
        mcc, amount_idr, amount_minor, status, event_time, event_date, payer_hash, ingested_at
    FROM ${database}.qris_payments
    UNION ALL
    SELECT
        multiIf(instrument IN ('debit_card', 'credit_card'), 'card',
                instrument IN ('emoney', 'ewallet'), 'emoney', 'transfer') AS channel,
        instrument, 'noncash_payments' AS source_table,
        payment_key, dedup_key, provider_role, merchant_ref,
        region_code AS p_region_code, province_code AS p_province_code,
        kab_kota_code AS p_kab_kota_code, kecamatan_code AS p_kecamatan_code, sector AS p_sector,
        mcc, amount_idr, amount_minor, status, event_time, event_date, payer_hash, ingested_at
    FROM ${database}.noncash_payments
) AS umkm_payments_
ANY LEFT JOIN ${database}.v_merchant_refs AS umkm_refs_ USING merchant_ref;
