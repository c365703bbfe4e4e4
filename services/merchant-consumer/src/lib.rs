//! The UMKM merchant registry: the `merchants.registry.v1` contract (registered / updated /
//! closed, whole state per event, a version per merchant), its rules and the `merchant_events`
//! history row. The current state is the highest version (`v_merchants_current`), so events
//! that arrive out of order resolve to the latest version. The shared runtime does the rest.
//!
//! Deduplication: one row per (merchant_id, version); a redelivery, or a second event claiming
//! a version already held, is a duplicate.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use umkm_core::Invalid;
use umkm_core::dedup::Key;
use umkm_core::fields::{
    Decimal, Shared, all_digits, check_event_id, check_message_key, id_like, is_nmid, mid_ref,
    nmid_ref, opt,
};

use umkm_core::reference::{self, Regions};
use umkm_core::time::{EventTime, days_since_epoch};
use umkm_runtime::config::Validated;
use umkm_runtime::family::{Family, MessageMeta, Processed};

pub const READER_SCHEMA: &str = include_str!("../../../schemas/avro/merchant_event.avsc");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SourceType {
    Registry,
    Acquirer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MerchantEventType {
    Registered,
    Updated,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Scale {
    Mikro,
    Kecil,
    Menengah,
    Besar,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QrisCriteria {
    UMI,
    UKE,
    UME,
    UBE,
    URE,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OnboardingChannel {
    AcquirerBranch,
    Agent,
    Online,
    GovernmentProgram,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcquirerMerchantId {
    pub acquirer_id: String,
    pub merchant_id: String,
}

/// `schemas/avro/merchant_event.avsc` v1, field for field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MerchantEvent {
    pub event_id: String,
    pub source_id: String,
    pub source_type: SourceType,
    pub event_type: MerchantEventType,
    pub merchant_id: String,
    pub version: i64,
    pub event_time: i64,
    pub business_name: String,
    pub nmid: Option<String>,
    pub acquirer_merchant_ids: Vec<AcquirerMerchantId>,
    pub kbli_codes: Vec<String>,
    pub mcc: Option<String>,
    pub scale: Option<Scale>,
    pub qris_criteria: Option<QrisCriteria>,
    pub region_code: String,
    pub onboarding_channel: OnboardingChannel,
    /// Days since 1970-01-01 (Avro `date`).
    pub onboarding_date: Option<i32>,
}

/// One row of `merchant_events` (schemas/clickhouse/0008_merchant_events.sql), column for
/// column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct MerchantRow {
    pub dedup_key: String,
    pub merchant_id: String,
    pub version: i64,
    pub event_type: String,
    pub status: String,
    pub event_id: String,
    pub source_id: String,
    pub source_type: String,
    pub event_time: u32,
    pub event_time_ms: i64,
    pub event_date: u16,
    pub business_name: String,
    pub nmid: String,
    pub merchant_refs: Vec<String>,
    pub kbli_codes: Vec<String>,
    pub kbli_primary: String,
    pub kbli_section: String,
    pub mcc: String,
    pub sector: String,
    pub sector_source: String,
    pub scale: String,
    pub qris_criteria: String,
    pub region_code: Shared,
    pub province_code: Shared,
    pub kab_kota_code: Shared,
    pub kecamatan_code: Shared,
    pub onboarding_channel: String,
    pub onboarding_date: Option<u16>,
    pub schema_id: u32,
    pub source_topic: Shared,
    pub source_partition: i32,
    pub source_offset: i64,
    pub ingested_at: u32,
}

pub fn dedup_key(merchant_id: &str, version: i64) -> Key {
    Key::of("merchant-v1", &[merchant_id, Decimal::of(version).as_str()])
}

/// Sector and where it came from: the main KBLI code, else the MCC, else `unknown`.
pub fn sector(kbli_codes: &[String], mcc: &str) -> (&'static str, &'static str, &'static str) {
    if let Some((section, sector)) = kbli_codes.first().and_then(|k| reference::kbli_sector(k)) {
        return (sector, "kbli", section);
    }
    match reference::sector_for_mcc(mcc) {
        reference::UNKNOWN_SECTOR => (reference::UNKNOWN_SECTOR, "", ""),
        s => (s, "mcc", ""),
    }
}

/// Earliest accepted onboarding date: 1990-01-01.
const MIN_ONBOARDING_DAY: i32 = 7305;

pub struct Merchants {
    regions: Arc<Regions>,
}

impl Default for Merchants {
    fn default() -> Self {
        Merchants {
            regions: Arc::new(Regions::shipped().clone()),
        }
    }
}

impl Merchants {
    /// Checks region codes against `regions` instead of the shipped reference.
    pub fn with_regions(mut self, regions: Arc<Regions>) -> Self {
        self.regions = regions;
        self
    }

    /// Every validation rule; returns all that fail.
    pub fn validate(&self, e: &MerchantEvent, meta: &MessageMeta<'_>) -> Vec<Invalid> {
        let mut bad = Vec::new();
        check_event_id(&e.event_id, &mut bad);
        if e.source_id.trim().is_empty() {
            bad.push(Invalid::new("source_id", "source_id is empty"));
        }
        if !id_like(&e.merchant_id, 64) {
            bad.push(Invalid::new(
                "merchant_id_format",
                format!(
                    "merchant_id {:?} is not 1-64 characters of [A-Za-z0-9-_.:/]",
                    e.merchant_id
                ),
            ));
        }
        check_message_key(meta.key, &e.merchant_id, "the merchant_id", &mut bad);
        if e.version < 0 {
            bad.push(Invalid::new(
                "version_negative",
                format!("version {} is negative", e.version),
            ));
        }
        if e.business_name.trim().is_empty() {
            bad.push(Invalid::new("business_name", "business_name is empty"));
        }
        if let Some(n) = &e.nmid
            && !is_nmid(n)
        {
            bad.push(Invalid::new(
                "nmid_format",
                format!("nmid {n:?} is not 'ID' followed by 13 digits"),
            ));
        }
        for a in &e.acquirer_merchant_ids {
            if !(a.acquirer_id.len() >= 3
                && id_like(&a.acquirer_id, 16)
                && id_like(&a.merchant_id, 32))
            {
                bad.push(Invalid::new(
                    "acquirer_merchant_id_format",
                    format!(
                        "acquirer merchant id {:?}/{:?} is not a 3-16 character acquirer id and a 1-32 character merchant id",
                        a.acquirer_id, a.merchant_id
                    ),
                ));
                break;
            }
        }
        if let Some(k) = e
            .kbli_codes
            .iter()
            .find(|k| !(k.len() == 5 && all_digits(k)))
        {
            bad.push(Invalid::new(
                "kbli_format",
                format!("kbli code {k:?} is not 5 digits (KBLI 2020 kelompok)"),
            ));
        }
        if let Some(m) = &e.mcc
            && !(m.len() == 4 && all_digits(m))
        {
            bad.push(Invalid::new(
                "mcc_format",
                format!("mcc {m:?} is not 4 digits"),
            ));
        }
        if let Err(i) = self.regions.check(&e.region_code) {
            bad.push(i);
        }
        match EventTime::check(e.event_time, meta.now_ms) {
            Err(i) => bad.push(i),
            Ok(t) => {
                if let Some(d) = e.onboarding_date {
                    let event_day = i32::from(days_since_epoch(t.wib_date()));
                    if !(MIN_ONBOARDING_DAY..=event_day).contains(&d) {
                        bad.push(Invalid::new(
                            "onboarding_date_range",
                            format!(
                                "onboarding_date (day {d}) is not between 1990-01-01 and the event's date"
                            ),
                        ));
                    }
                }
            }
        }
        bad
    }

    pub fn normalise(
        &self,
        e: MerchantEvent,
        meta: &MessageMeta<'_>,
    ) -> Result<Processed<MerchantRow>, Vec<Invalid>> {
        let bad = self.validate(&e, meta);
        if !bad.is_empty() {
            return Err(bad);
        }
        let (Ok(region), Ok(t)) = (
            self.regions.check(&e.region_code),
            EventTime::check(e.event_time, meta.now_ms),
        ) else {
            return Err(vec![Invalid::new("internal", "re-validation failed")]);
        };
        let event_date = days_since_epoch(t.wib_date());
        let key = dedup_key(&e.merchant_id, e.version);
        let nmid = opt(e.nmid);
        let mut refs = Vec::with_capacity(1 + e.acquirer_merchant_ids.len());
        if !nmid.is_empty() {
            refs.push(nmid_ref(&nmid));
        }
        for a in &e.acquirer_merchant_ids {
            let r = mid_ref(&a.acquirer_id, &a.merchant_id);
            if !refs.contains(&r) {
                refs.push(r);
            }
        }
        let mcc = opt(e.mcc);
        let (sector, sector_source, kbli_section) = sector(&e.kbli_codes, &mcc);
        let lower = |s: String| s.to_ascii_lowercase();
        let row = MerchantRow {
            dedup_key: key.hex(),
            version: e.version,
            event_type: lower(format!("{:?}", e.event_type)),
            status: if e.event_type == MerchantEventType::Closed {
                "closed"
            } else {
                "active"
            }
            .into(),
            source_type: lower(format!("{:?}", e.source_type)),
            event_time: t.utc_secs(),
            event_time_ms: t.utc_ms,
            event_date,
            business_name: e.business_name.trim().to_string(),
            nmid,
            merchant_refs: refs,
            kbli_primary: e.kbli_codes.first().cloned().unwrap_or_default(),
            kbli_codes: e.kbli_codes,
            kbli_section: kbli_section.into(),
            mcc,
            sector: sector.into(),
            sector_source: sector_source.into(),
            scale: e.scale.map(|s| lower(format!("{s:?}"))).unwrap_or_default(),
            qris_criteria: e
                .qris_criteria
                .map(|c| format!("{c:?}"))
                .unwrap_or_default(),
            region_code: region.code,
            province_code: region.province,
            kab_kota_code: region.kab_kota,
            kecamatan_code: region.kecamatan,
            onboarding_channel: match e.onboarding_channel {
                OnboardingChannel::AcquirerBranch => "acquirer_branch",
                OnboardingChannel::Agent => "agent",
                OnboardingChannel::Online => "online",
                OnboardingChannel::GovernmentProgram => "government_program",
                OnboardingChannel::Other => "other",
            }
            .into(),
            // Validated to be in 1990..=event date, so it fits a ClickHouse Date.
            onboarding_date: e.onboarding_date.map(|d| d as u16),
            schema_id: meta.schema_id,
            source_topic: meta.topic.clone(),
            source_partition: meta.partition,
            source_offset: meta.offset,
            ingested_at: meta.now_secs,
            event_id: e.event_id,
            source_id: e.source_id,
            merchant_id: e.merchant_id,
        };
        Ok(Processed {
            key,
            alt: None,
            priority: 0,
            event_date,
            row,
        })
    }
}

impl Family for Merchants {
    type Event = MerchantEvent;
    type Row = MerchantRow;
    const SERVICE: &'static str = "merchant-consumer";
    const TABLE: &'static str = "merchant_events";
    const DEFAULT_TOPIC: &'static str = "merchants.registry.v1";
    const DEFAULT_GROUP: &'static str = "umkm-merchant-consumer";
    const DEFAULT_DLQ_TOPIC: &'static str = "merchants.dlq";
    /// Two publishers may report one version with different event times (dates).
    const KEY_DETERMINES_DATE: bool = false;
    const READER_SCHEMA: &'static str = READER_SCHEMA;

    fn build(v: &Validated) -> Result<Self, String> {
        Ok(Merchants::default().with_regions(v.regions.clone()))
    }

    fn process(
        &self,
        event: MerchantEvent,
        meta: &MessageMeta<'_>,
    ) -> Result<Processed<MerchantRow>, Vec<Invalid>> {
        self.normalise(event, meta)
    }
}

#[cfg(test)]
mod tests;
