-- Which consumer may insert a partition's rows (README "Delivery guarantees"): a consumer claims each
-- partition it is assigned before its first dedup lookup for it, and every INSERT succeeds only
-- while the claims it was looked up under are the latest, ordered by (claim, claim_id). A consumer
-- that lost its partitions (frozen past the session timeout, say) is refused and inserts nothing.
-- A few rows per rebalance; on a cluster the table is on every node and claims are written with a
-- quorum of all replicas.
CREATE TABLE IF NOT EXISTS ${database}.partition_claims ${on_cluster}
(
    target_table String COMMENT 'fact table the claim is for',
    topic String COMMENT 'Kafka topic',
    partition Int32 COMMENT 'Kafka partition',
    claim UInt64 COMMENT 'claim number: one above the highest the claimer read',
    claim_id String COMMENT 'random id of this claim; breaks ties between equal numbers',
    claimed_at DateTime('UTC') COMMENT 'when the consumer claimed it'
)
ENGINE = ${replicated}MergeTree
ORDER BY (target_table, topic, partition, claim, claim_id);
