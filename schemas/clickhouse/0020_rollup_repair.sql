-- Repair of the payment rollups after a ClickHouse crash (docs/reliability.md "Rollups after a
-- crash"). A materialized view writes its part after the facts' part of the same INSERT, so a
-- server killed between the two keeps the facts and loses the rollup rows; the consumer's retry
-- then finds the keys in the facts and rightly inserts nothing. Whenever a consumer's dedup
-- lookup finds keys of its batch in the facts after a failed write or a rebalance (when an
-- earlier insert of those rows may have been cut short), it notes them here; `refresh-metrics`
-- compares the rollup groups of the noted keys with the facts and inserts what is missing, then
-- records how far it got in rollup_repairs.
CREATE TABLE IF NOT EXISTS ${database}.rollup_suspects ${on_cluster}
(
    fact_table String COMMENT 'fact table the key is in (qris_payments or noncash_payments)',
    event_date Date COMMENT 'the row''s event_date',
    dedup_key String COMMENT 'the row''s dedup_key',
    noted_at DateTime('UTC') COMMENT 'when the consumer found it'
)
ENGINE = ${replicated}MergeTree
PARTITION BY toYYYYMM(noted_at)
ORDER BY (noted_at, fact_table);
CREATE TABLE IF NOT EXISTS ${database}.rollup_repairs ${on_cluster}
(
    repaired_until DateTime('UTC') COMMENT 'every suspect noted up to here has been checked',
    suspects UInt64 COMMENT 'suspect keys checked by this run',
    groups_repaired UInt64 COMMENT 'rollup rows inserted to match the facts',
    groups_above UInt64 COMMENT 'rollup groups holding more than the facts (left alone, logged)',
    repaired_at DateTime('UTC') COMMENT 'when the run finished'
)
ENGINE = ${replicated}MergeTree
ORDER BY repaired_until;
