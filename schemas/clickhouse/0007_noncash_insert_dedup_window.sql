-- umkm:min_server_version 22.8
-- Current servers only: see 0002 (retried inserts carry insert_deduplication_token).
ALTER TABLE ${database}.noncash_payments ${on_cluster} MODIFY SETTING non_replicated_deduplication_window = 1000;
