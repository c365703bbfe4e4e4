-- Metrics net of refunds and cancellations (docs/metrics.md "Definitions"): each undone payment
-- is tied to its payment through payment_key (which has no date, so a refund weeks later names
-- the same one), and what it undoes counts in the period of the payment; refunds also count in
-- the period they happened (refund_count, refund_value_idr), as before. Plain views over the
-- facts: a refund that arrives before its payment, or a payment that arrives late, is linked at
-- the next query or snapshot refresh, in any order. SQL accepted by ClickHouse 18.16 and current
-- servers.

-- One row per payment_key that has a refund or a cancellation: linked = 1 when the payment's
-- successful report is in the data (its date, amount, merchant and report then describe the
-- row), else 0 (a refund of a payment outside the data, or a payment that never succeeded).
CREATE VIEW IF NOT EXISTS ${database}.v_payment_undos ${on_cluster} AS
SELECT
    payment_key,
    toUInt8(successes > 0) AS linked,
    if(successes > 0, s_channel, a_channel) AS channel,
    if(successes > 0, s_instrument, a_instrument) AS instrument,
    if(successes > 0, s_merchant_ref, a_merchant_ref) AS merchant_ref,
    if(successes > 0, s_kab, a_kab) AS reported_kab_kota_code,
    if(successes > 0, s_kec, a_kec) AS reported_kecamatan_code,
    if(successes > 0, s_sector, a_sector) AS reported_sector,
    if(successes > 0, s_date, first_undo_date) AS payment_date,
    s_amount AS payment_amount_idr,
    refund_rows,
    refunded_idr AS refunded_value_idr,
    cancellations AS cancelled_rows,
    if(successes > 0, if(cancellations > 0, s_amount, least(refunded_idr, s_amount)), 0) AS undone_value_idr,
    toUInt8(successes > 0 AND (cancellations > 0 OR refunded_idr >= s_amount)) AS fully_undone,
    first_undo_date
FROM
(
    SELECT payment_key,
        countIf(status = 'success') AS successes,
        anyIf(u_channel, status = 'success') AS s_channel, any(u_channel) AS a_channel,
        anyIf(u_instrument, status = 'success') AS s_instrument, any(u_instrument) AS a_instrument,
        anyIf(u_merchant_ref, status = 'success') AS s_merchant_ref, any(u_merchant_ref) AS a_merchant_ref,
        anyIf(kab_kota_code, status = 'success') AS s_kab, any(kab_kota_code) AS a_kab,
        anyIf(kecamatan_code, status = 'success') AS s_kec, any(kecamatan_code) AS a_kec,
        anyIf(sector, status = 'success') AS s_sector, any(sector) AS a_sector,
        minIf(event_date, status = 'success') AS s_date,
        toInt64(maxIf(amount_idr, status = 'success')) AS s_amount,
        minIf(event_date, status IN ('refunded', 'cancelled')) AS first_undo_date,
        countIf(status = 'refunded') AS refund_rows,
        toInt64(sumIf(amount_idr, status = 'refunded')) AS refunded_idr,
        countIf(status = 'cancelled') AS cancellations
    FROM
    (
        SELECT payment_key, 'qris' AS u_channel, concat('qris_', qr_mode) AS u_instrument,
            concat('NMID:', nmid) AS u_merchant_ref, kab_kota_code, kecamatan_code, sector, status,
            event_date, amount_idr
        FROM ${database}.qris_payments
        WHERE payment_key IN (SELECT payment_key FROM ${database}.qris_payments WHERE status IN ('refunded', 'cancelled'))
        UNION ALL
        SELECT payment_key,
            multiIf(instrument IN ('debit_card', 'credit_card'), 'card', instrument IN ('emoney', 'ewallet'), 'emoney', 'transfer') AS u_channel,
            instrument AS u_instrument, merchant_ref AS u_merchant_ref, kab_kota_code, kecamatan_code,
            sector, status, event_date, amount_idr
        FROM ${database}.noncash_payments
        WHERE payment_key IN (SELECT payment_key FROM ${database}.noncash_payments WHERE status IN ('refunded', 'cancelled'))
    ) AS umkm_undo_facts_
    GROUP BY payment_key
) AS umkm_undos_;

DROP TABLE IF EXISTS ${database}.v_merchant_activity_monthly ${on_cluster};
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
    s_undone AS undone_count,
    s_undone_value AS undone_value_idr,
    toInt64(s_success) - toInt64(s_undone) AS net_count,
    s_success_value - s_undone_value AS net_value_idr,
    s_refund AS refund_count,
    s_refund_value AS refund_value_idr,
    s_unlinked AS unlinked_refund_count,
    s_cancelled AS cancelled_count,
    s_failed AS failed_count
FROM
(
    SELECT month, merchant_ref, channel, instrument, r_kab_kota_code, r_kecamatan_code, r_sector,
        sum(u_success) AS s_success, sum(u_success_value) AS s_success_value,
        sum(u_undone) AS s_undone, sum(u_undone_value) AS s_undone_value,
        sum(u_refund) AS s_refund, sum(u_refund_value) AS s_refund_value, sum(u_unlinked) AS s_unlinked,
        sum(u_cancelled) AS s_cancelled, sum(u_failed) AS s_failed
    FROM
    (
        SELECT month, merchant_ref, channel, instrument, reported_kab_kota_code AS r_kab_kota_code,
            reported_kecamatan_code AS r_kecamatan_code, reported_sector AS r_sector,
            success_count AS u_success, success_value_idr AS u_success_value,
            toUInt64(0) AS u_undone, toInt64(0) AS u_undone_value,
            refund_count AS u_refund, refund_value_idr AS u_refund_value, toUInt64(0) AS u_unlinked,
            cancelled_count AS u_cancelled, failed_count AS u_failed
        FROM ${database}.payments_merchant_monthly
        UNION ALL
        -- What refunds and cancellations undo, in the period of the payment (linked), and the
        -- refunds of payments not in the data, in the period of their first refund: one pass.
        SELECT toStartOfMonth(if(linked = 1, payment_date, first_undo_date)) AS month, merchant_ref, channel, instrument,
            reported_kab_kota_code AS r_kab_kota_code, reported_kecamatan_code AS r_kecamatan_code,
            reported_sector AS r_sector, toUInt64(0) AS u_success, toInt64(0) AS u_success_value,
            toUInt64(fully_undone) AS u_undone, toInt64(undone_value_idr) AS u_undone_value,
            toUInt64(0) AS u_refund, toInt64(0) AS u_refund_value,
            toUInt64(if(linked = 1, 0, refund_rows)) AS u_unlinked,
            toUInt64(0) AS u_cancelled, toUInt64(0) AS u_failed
        FROM ${database}.v_payment_undos
        WHERE linked = 1 OR refund_rows > 0
    ) AS umkm_activity_rows_
    GROUP BY month, merchant_ref, channel, instrument, r_kab_kota_code, r_kecamatan_code, r_sector
) AS umkm_activity_
ANY LEFT JOIN ${database}.v_merchant_refs AS umkm_refs_ USING merchant_ref;

DROP TABLE IF EXISTS ${database}.v_merchant_activity_daily ${on_cluster};
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
    s_undone AS undone_count,
    s_undone_value AS undone_value_idr,
    toInt64(s_success) - toInt64(s_undone) AS net_count,
    s_success_value - s_undone_value AS net_value_idr,
    s_refund AS refund_count,
    s_refund_value AS refund_value_idr,
    s_unlinked AS unlinked_refund_count,
    s_cancelled AS cancelled_count,
    s_failed AS failed_count
FROM
(
    SELECT event_date, merchant_ref, channel, instrument, r_kab_kota_code, r_kecamatan_code, r_sector,
        sum(u_success) AS s_success, sum(u_success_value) AS s_success_value,
        sum(u_undone) AS s_undone, sum(u_undone_value) AS s_undone_value,
        sum(u_refund) AS s_refund, sum(u_refund_value) AS s_refund_value, sum(u_unlinked) AS s_unlinked,
        sum(u_cancelled) AS s_cancelled, sum(u_failed) AS s_failed
    FROM
    (
        SELECT event_date, merchant_ref, channel, instrument, reported_kab_kota_code AS r_kab_kota_code,
            reported_kecamatan_code AS r_kecamatan_code, reported_sector AS r_sector,
            success_count AS u_success, success_value_idr AS u_success_value,
            toUInt64(0) AS u_undone, toInt64(0) AS u_undone_value,
            refund_count AS u_refund, refund_value_idr AS u_refund_value, toUInt64(0) AS u_unlinked,
            cancelled_count AS u_cancelled, failed_count AS u_failed
        FROM ${database}.payments_merchant_daily
        UNION ALL
        -- What refunds and cancellations undo, in the period of the payment (linked), and the
        -- refunds of payments not in the data, in the period of their first refund: one pass.
        SELECT if(linked = 1, payment_date, first_undo_date) AS event_date, merchant_ref, channel, instrument,
            reported_kab_kota_code AS r_kab_kota_code, reported_kecamatan_code AS r_kecamatan_code,
            reported_sector AS r_sector, toUInt64(0) AS u_success, toInt64(0) AS u_success_value,
            toUInt64(fully_undone) AS u_undone, toInt64(undone_value_idr) AS u_undone_value,
            toUInt64(0) AS u_refund, toInt64(0) AS u_refund_value,
            toUInt64(if(linked = 1, 0, refund_rows)) AS u_unlinked,
            toUInt64(0) AS u_cancelled, toUInt64(0) AS u_failed
        FROM ${database}.v_payment_undos
        WHERE linked = 1 OR refund_rows > 0
    ) AS umkm_activity_rows_
    GROUP BY event_date, merchant_ref, channel, instrument, r_kab_kota_code, r_kecamatan_code, r_sector
) AS umkm_activity_
ANY LEFT JOIN ${database}.v_merchant_refs AS umkm_refs_ USING merchant_ref;

-- The snapshots gain the net figures (refresh-metrics fills them from the views above).
ALTER TABLE ${database}.adoption_merchant_monthly ${on_cluster} ADD COLUMN undone_count UInt64 COMMENT 'successful payments of the period later fully refunded or cancelled';
ALTER TABLE ${database}.adoption_merchant_monthly ${on_cluster} ADD COLUMN undone_value_idr Int64 COMMENT 'value refunded or cancelled of the payments of the period, rupiah (partial refunds included)';
ALTER TABLE ${database}.adoption_merchant_monthly ${on_cluster} ADD COLUMN net_count Int64 COMMENT 'successful payments of the period not fully refunded or cancelled';
ALTER TABLE ${database}.adoption_merchant_monthly ${on_cluster} ADD COLUMN net_value_idr Int64 COMMENT 'value of the successful payments of the period minus what was refunded of them, rupiah';
ALTER TABLE ${database}.adoption_merchant_monthly ${on_cluster} ADD COLUMN unlinked_refund_count UInt64 COMMENT 'refunds in the period whose payment is not in the data';
ALTER TABLE ${database}.adoption_merchant_daily ${on_cluster} ADD COLUMN undone_count UInt64 COMMENT 'successful payments of the period later fully refunded or cancelled';
ALTER TABLE ${database}.adoption_merchant_daily ${on_cluster} ADD COLUMN undone_value_idr Int64 COMMENT 'value refunded or cancelled of the payments of the period, rupiah (partial refunds included)';
ALTER TABLE ${database}.adoption_merchant_daily ${on_cluster} ADD COLUMN net_count Int64 COMMENT 'successful payments of the period not fully refunded or cancelled';
ALTER TABLE ${database}.adoption_merchant_daily ${on_cluster} ADD COLUMN net_value_idr Int64 COMMENT 'value of the successful payments of the period minus what was refunded of them, rupiah';
ALTER TABLE ${database}.adoption_merchant_daily ${on_cluster} ADD COLUMN unlinked_refund_count UInt64 COMMENT 'refunds in the period whose payment is not in the data';

-- Descriptions of the new view columns (tests/tests/migrations.rs checks every view column).
INSERT INTO ${database}.column_docs (version, object, column, description, loaded_at)
SELECT 'views-v1', tupleElement(r, 1), tupleElement(r, 2), tupleElement(r, 3), now()
FROM (SELECT arrayJoin([
    ('v_merchant_activity_monthly', 'undone_count', 'successful payments of this month later fully refunded or cancelled (attributed to the payment\'s month, whenever the refund came)'),
    ('v_merchant_activity_monthly', 'undone_value_idr', 'value refunded or cancelled of the payments of this month, rupiah; partial refunds included'),
    ('v_merchant_activity_monthly', 'net_count', 'success_count - undone_count: successful payments not fully refunded or cancelled'),
    ('v_merchant_activity_monthly', 'net_value_idr', 'success_value_idr - undone_value_idr, rupiah'),
    ('v_merchant_activity_monthly', 'unlinked_refund_count', 'refunds whose payment is not in the data, in the month of the first refund'),
    ('v_merchant_activity_daily', 'undone_count', 'successful payments of this day later fully refunded or cancelled (attributed to the payment\'s day, whenever the refund came)'),
    ('v_merchant_activity_daily', 'undone_value_idr', 'value refunded or cancelled of the payments of this day, rupiah; partial refunds included'),
    ('v_merchant_activity_daily', 'net_count', 'success_count - undone_count: successful payments not fully refunded or cancelled'),
    ('v_merchant_activity_daily', 'net_value_idr', 'success_value_idr - undone_value_idr, rupiah'),
    ('v_merchant_activity_daily', 'unlinked_refund_count', 'refunds whose payment is not in the data, in the day of the first refund'),
    ('v_payment_undos', 'payment_key', 'the payment (no date in it: every report, refund and cancellation of the payment carries it)'),
    ('v_payment_undos', 'linked', '1 when the payment\'s successful report is in the data'),
    ('v_payment_undos', 'channel', 'qris, card, emoney or transfer'),
    ('v_payment_undos', 'instrument', 'payment instrument (see v_payments.instrument)'),
    ('v_payment_undos', 'merchant_ref', 'payment-side merchant id: NMID:<nmid> or MID:<acquirer>:<mid>'),
    ('v_payment_undos', 'reported_kab_kota_code', 'kab/kota the payment\'s report gave'),
    ('v_payment_undos', 'reported_kecamatan_code', 'kecamatan the payment\'s report gave, empty when unknown'),
    ('v_payment_undos', 'reported_sector', 'sector from the payment\'s MCC'),
    ('v_payment_undos', 'payment_date', 'WIB date of the payment (linked), else of its first refund or cancellation'),
    ('v_payment_undos', 'payment_amount_idr', 'amount of the payment, rupiah (0 when not linked)'),
    ('v_payment_undos', 'refund_rows', 'refunds of the payment (several partial refunds are several rows)'),
    ('v_payment_undos', 'refunded_value_idr', 'sum of the refunded amounts, rupiah'),
    ('v_payment_undos', 'cancelled_rows', 'cancellations of the payment'),
    ('v_payment_undos', 'undone_value_idr', 'what the refunds and cancellations take off the payment\'s value, at most its amount (0 when not linked)'),
    ('v_payment_undos', 'fully_undone', '1 when the payment is cancelled or refunded in full (then it no longer counts as a transaction)'),
    ('v_payment_undos', 'first_undo_date', 'WIB date of the first refund or cancellation')
]) AS r)
WHERE (tupleElement(r, 1), tupleElement(r, 2)) NOT IN (SELECT object, column FROM ${database}.column_docs);
