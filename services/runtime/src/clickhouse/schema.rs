//! The schema side: migrations (`schemas/clickhouse/`, rendered by `umkm_core::migrations`)
//! and the adoption snapshots (`umkm_core::adoption`), rebuilt and swapped in by
//! `refresh-metrics`.

use std::time::Duration;

use umkm_core::adoption::Scope;
use umkm_core::migrations;

use super::{ClickHouse, ClickHouseError};

impl ClickHouse {
    /// Rebuilds every adoption snapshot (`umkm_core::adoption::ALL`) and swaps each in; returns
    /// (table, rows) per snapshot. Each build is bounded by `timeout`; the previous copy stays
    /// readable until its swap.
    pub async fn refresh_adoption(
        &self,
        timeout: Duration,
    ) -> Result<Vec<(&'static str, u64)>, ClickHouseError> {
        let mut out = Vec::new();
        for snap in umkm_core::adoption::ALL {
            out.push((snap.table, self.refresh_snapshot(snap, timeout).await?));
        }
        Ok(out)
    }

    /// Loads a region reference newer than the shipped one (`reference.regions_file`) into
    /// `ref_regions` under its version; rows already there are kept.
    pub async fn load_regions(
        &self,
        regions: &umkm_core::reference::Regions,
    ) -> Result<(), ClickHouseError> {
        self.execute(&umkm_core::reference::regions_insert_sql(
            regions,
            &self.database,
        ))
        .await
    }

    /// When `refresh-metrics` last rebuilt the monthly snapshot (Unix seconds; 0 when it never
    /// ran or the table is empty).
    pub async fn snapshot_refreshed_at(&self) -> Result<i64, ClickHouseError> {
        let q = self.admin.query(&format!(
            "SELECT toInt64(toUnixTimestamp(max(refreshed_at))) FROM {}.{}",
            self.database,
            umkm_core::adoption::MONTHLY.table
        ));
        tokio::time::timeout(self.query_timeout, q.fetch_one::<i64>())
            .await
            .map_err(|_| ClickHouseError::timeout("snapshot age"))?
            .map_err(ClickHouseError::from_client)
    }

    async fn refresh_snapshot(
        &self,
        snap: &umkm_core::adoption::Snapshot,
        timeout: Duration,
    ) -> Result<u64, ClickHouseError> {
        let db = &self.database;
        let table = snap.table;
        let build = uuid::Uuid::new_v4().simple().to_string();
        let scope = match &self.render.cluster {
            Some(name) => Scope::Cluster {
                name,
                build: &build,
            },
            None => Scope::Server,
        };
        let exists = |t: String| {
            let q = self.admin.query(&format!("EXISTS TABLE {db}.{t}"));
            async move {
                tokio::time::timeout(self.query_timeout, q.fetch_one::<u8>())
                    .await
                    .map_err(|_| ClickHouseError::timeout("EXISTS TABLE"))?
                    .map_err(ClickHouseError::from_client)
            }
        };
        if exists(table.into()).await? == 0 && exists(format!("{table}_prev")).await? == 1 {
            tracing::warn!(table, "repairing an interrupted snapshot swap");
            self.execute(&snap.repair(db, scope)).await?;
        }
        for s in snap.prepare(db, scope) {
            self.execute(&s).await?;
        }
        let mut query = self.admin.query(&snap.build(db));
        if let Scope::Cluster { .. } = scope {
            // Every node has the whole copy before any node swaps it in.
            let replicas = self.replicas_of(&format!("{table}_next")).await?;
            query = query
                .with_setting("insert_quorum", replicas.to_string())
                .with_setting("insert_quorum_timeout", timeout.as_millis().to_string());
        }
        tokio::time::timeout(timeout, query.execute())
            .await
            .map_err(|_| ClickHouseError::timeout("adoption snapshot build"))?
            .map_err(ClickHouseError::from_client)?;
        for s in snap.swap(db, scope) {
            self.execute(&s).await?;
        }
        tokio::time::timeout(
            self.query_timeout,
            self.admin
                .query(&format!("SELECT count() FROM {db}.{table}"))
                .fetch_one::<u64>(),
        )
        .await
        .map_err(|_| ClickHouseError::timeout("count"))?
        .map_err(ClickHouseError::from_client)
    }

    /// How many replicas `table` (replicated) has across the cluster.
    pub(super) async fn replicas_of(&self, table: &str) -> Result<u64, ClickHouseError> {
        let q = self.admin.query(&format!(
            "SELECT toUInt64(total_replicas) FROM system.replicas WHERE database = '{}' AND table = '{table}'",
            self.database
        ));
        tokio::time::timeout(self.query_timeout, q.fetch_one::<u64>())
            .await
            .map_err(|_| ClickHouseError::timeout("system.replicas"))?
            .map_err(ClickHouseError::from_client)
    }

    /// Applies every migration not yet recorded; returns (applied, skipped-for-version).
    pub async fn migrate(&self) -> Result<(Vec<String>, Vec<String>), ClickHouseError> {
        for stmt in migrations::BOOTSTRAP {
            for s in migrations::render(stmt, &self.render) {
                self.execute(&s).await?;
            }
        }
        let applied: Vec<(u32, String)> = tokio::time::timeout(
            self.query_timeout,
            self.admin
                .query(&format!(
                    "SELECT version, checksum FROM {}.schema_migrations",
                    self.database
                ))
                .fetch_all::<(u32, String)>(),
        )
        .await
        .map_err(|_| ClickHouseError::timeout("read schema_migrations"))?
        .map_err(ClickHouseError::from_client)?;
        let mut done = Vec::new();
        let mut skipped = Vec::new();
        for m in migrations::ALL {
            let sum = migrations::checksum(m.sql);
            if let Some((_, old)) = applied.iter().find(|(v, _)| *v == m.version) {
                if *old != sum {
                    tracing::warn!(
                        migration = m.name,
                        "migration file changed after it was applied; not re-applied"
                    );
                }
                continue;
            }
            if !migrations::applies_to(m, self.server_version) {
                skipped.push(m.name.to_string());
                continue;
            }
            for stmt in migrations::render(m.sql, &self.render) {
                match self.execute(&stmt).await {
                    Err(e)
                        if e.code == Some(migrations::COLUMN_EXISTS)
                            && migrations::is_add_column(&stmt) =>
                    {
                        tracing::info!(migration = m.name, "column already added");
                    }
                    r => r?,
                }
            }
            self.execute(&format!(
                "INSERT INTO {}.schema_migrations (version, name, checksum, applied_at) VALUES ({}, '{}', '{}', now())",
                self.database, m.version, m.name, sum
            ))
            .await?;
            tracing::info!(migration = m.name, "migration applied");
            done.push(m.name.to_string());
        }
        Ok((done, skipped))
    }
}
