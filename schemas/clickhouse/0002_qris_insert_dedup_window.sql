-- umkm:min_server_version 22.8
-- Current servers only (18.16 has no such setting): keep the hashes of the last 1000 inserted
-- blocks on the non-replicated table too, so that an INSERT retried with the same
-- insert_deduplication_token (which the consumer sets on servers >= 22.8) is dropped by the
-- server. Replicated tables have replicated_deduplication_window already.
ALTER TABLE ${database}.qris_payments ${on_cluster} MODIFY SETTING non_replicated_deduplication_window = 1000;
