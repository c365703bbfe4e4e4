//! QRIS payments: the `payments.qris.v1` contract, its validation and normalisation rules and
//! the `qris_payments` row. The shared runtime does the rest.
//!
//! Deduplication (README "Deduplication keys"): one row per payment and status (per refund for
//! refunds). The payment is identified by (NMID, RRN, amount in sen), with no date, so a refund
//! made weeks later names the same `payment_key`; one fact is that plus its status, refund
//! reference and WIB date, and a report within the midnight skew of a WIB midnight also
//! matches the neighbouring date's fact. The issuer's and the acquirer's report of one payment,
//! and any redelivery, share the fact. Within one batch the acquirer's report wins (it owns the
//! merchant data: region, MCC, criteria); across batches the first report to land wins and later
//! ones are counted as duplicates.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use umkm_core::Invalid;
use umkm_core::dedup::KeyHex;
use umkm_core::fields::{
    Decimal, Label, Shared, all_digits, check_event_id, check_message_key, is_nmid, opt, trimmed,
};
pub use umkm_core::payment::PaymentStatus;
use umkm_core::payment::{
    CommonChecked, CommonFields, KeyDomains, UndoChecked, UndoFields, check_common, check_undo,
    report_keys,
};
use umkm_core::pii::{PayerHash, PiiHasher};

use umkm_core::reference::{self, Regions};
use umkm_runtime::config::Validated;
use umkm_runtime::family::{Family, MessageMeta, Processed};

pub const READER_SCHEMA: &str = include_str!("../../../schemas/avro/qris_payment.avsc");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProviderRole {
    Issuer,
    Acquirer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MerchantCriteria {
    UMI,
    UKE,
    UME,
    UBE,
    URE,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum QrMode {
    MpmStatic,
    MpmDynamic,
    Cpm,
    Ttm,
}

/// `schemas/avro/qris_payment.avsc` (revision 2), field for field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QrisPayment {
    pub event_id: String,
    pub provider_id: String,
    pub provider_role: ProviderRole,
    pub rrn: String,
    pub issuer_reference: Option<String>,
    pub acquirer_reference: Option<String>,
    pub partner_reference: Option<String>,
    pub issuer_id: Option<String>,
    pub acquirer_id: Option<String>,
    pub nmid: String,
    pub merchant_pan: Option<String>,
    pub mcc: String,
    pub merchant_criteria: MerchantCriteria,
    pub merchant_name: String,
    pub merchant_city: Option<String>,
    pub merchant_postal_code: Option<String>,
    pub region_code: String,
    pub qr_mode: QrMode,
    pub amount: String,
    pub currency: String,
    pub status: PaymentStatus,
    pub event_time: i64,
    pub payer_id: Option<String>,
    #[serde(default)]
    pub original_rrn: Option<String>,
    #[serde(default)]
    pub original_reference_no: Option<String>,
    #[serde(default)]
    pub original_partner_reference_no: Option<String>,
    #[serde(default)]
    pub original_event_time: Option<i64>,
    #[serde(default)]
    pub refund_reference: Option<String>,
    #[serde(default)]
    pub refund_amount: Option<String>,
}

/// One row of `qris_payments` (schemas/clickhouse/0001_qris_payments.sql), column for column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct QrisRow {
    pub dedup_key: KeyHex,
    pub payment_key: KeyHex,
    pub event_id: String,
    pub provider_id: String,
    pub provider_role: Label,
    pub rrn: String,
    pub issuer_reference: String,
    pub acquirer_reference: String,
    pub partner_reference: String,
    pub issuer_id: String,
    pub acquirer_id: String,
    pub nmid: String,
    pub merchant_pan: String,
    pub mcc: String,
    pub sector: Label,
    pub merchant_criteria: Label,
    pub merchant_name: String,
    pub merchant_city: String,
    pub merchant_postal_code: String,
    pub region_code: Shared,
    pub province_code: Shared,
    pub kab_kota_code: Shared,
    pub kecamatan_code: Shared,
    pub qr_mode: Label,
    pub amount_idr: i64,
    pub amount_minor: u8,
    pub currency: Label,
    pub status: Label,
    pub event_time: u32,
    pub event_time_ms: i64,
    pub event_date: u16,
    pub payer_hash: PayerHash,
    pub schema_id: u32,
    pub source_topic: Shared,
    pub source_partition: i32,
    pub source_offset: i64,
    pub ingested_at: u32,
    pub payment_amount_idr: i64,
    pub refund_reference: String,
    pub original_reference: String,
    pub original_reference_no: String,
    pub original_partner_reference_no: String,
    pub original_event_time_ms: i64,
}

/// Hash domains of the QRIS keys (`umkm_core::payment::report_keys`).
pub const KEY_DOMAINS: KeyDomains = KeyDomains {
    payment: "qris-payment-v2",
    fact: "qris-v2",
};

pub struct Qris {
    hasher: PiiHasher,
    midnight_skew_ms: i64,
    regions: Arc<Regions>,
}

impl Qris {
    pub fn new(hasher: PiiHasher, midnight_skew_ms: i64) -> Self {
        Self {
            hasher,
            midnight_skew_ms,
            regions: Arc::new(Regions::shipped().clone()),
        }
    }

    /// Checks region codes against `regions` instead of the shipped reference.
    pub fn with_regions(mut self, regions: Arc<Regions>) -> Self {
        self.regions = regions;
        self
    }

    /// Every validation rule; returns all that fail.
    pub fn validate(&self, e: &QrisPayment, meta: &MessageMeta<'_>) -> Vec<Invalid> {
        self.check(e, meta).0
    }

    /// Every rule, and the parsed common fields when they all pass.
    fn check(
        &self,
        e: &QrisPayment,
        meta: &MessageMeta<'_>,
    ) -> (Vec<Invalid>, Option<(CommonChecked, UndoChecked)>) {
        let mut bad = Vec::new();
        check_event_id(&e.event_id, &mut bad);
        if e.provider_id.trim().is_empty() {
            bad.push(Invalid::new("provider_id", "provider_id is empty"));
        }
        if e.rrn.len() != 12 || !e.rrn.bytes().all(|b| b.is_ascii_alphanumeric()) {
            bad.push(Invalid::new(
                "rrn_format",
                format!("rrn {:?} is not 12 alphanumeric characters", e.rrn),
            ));
        }
        let nmid_ok = is_nmid(&e.nmid);
        if !nmid_ok {
            bad.push(Invalid::new(
                "nmid_format",
                format!("nmid {:?} is not 'ID' followed by 13 digits", e.nmid),
            ));
        }
        check_message_key(meta.key, &e.nmid, "the nmid", &mut bad);
        if let Some(pan) = &e.merchant_pan
            && !(all_digits(pan) && (16..=19).contains(&pan.len()) && pan.starts_with("9360"))
        {
            bad.push(Invalid::new(
                "merchant_pan_format",
                "merchant_pan is not 16-19 digits starting with 9360",
            ));
        }
        for (name, v) in [("issuer_id", &e.issuer_id), ("acquirer_id", &e.acquirer_id)] {
            if let Some(v) = v
                && !(v.len() == 8 && all_digits(v))
            {
                bad.push(Invalid::new(
                    "nns_format",
                    format!("{name} {v:?} is not an 8-digit NNS"),
                ));
            }
        }
        if let Some(pc) = &e.merchant_postal_code
            && !(pc.len() == 5 && all_digits(pc))
        {
            bad.push(Invalid::new(
                "postal_code_format",
                format!("merchant_postal_code {pc:?} is not 5 digits"),
            ));
        }
        let common = check_common(
            &CommonFields {
                mcc: &e.mcc,
                merchant_name: &e.merchant_name,
                region_code: &e.region_code,
                amount: &e.amount,
                currency: &e.currency,
                event_time_ms: e.event_time,
            },
            &self.regions,
            meta.now_ms,
            &mut bad,
        );
        if let Some(r) = &e.original_rrn
            && (r.len() != 12 || !r.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            bad.push(Invalid::new(
                "rrn_format",
                format!("original_rrn {r:?} is not 12 alphanumeric characters"),
            ));
        }
        let undo = check_undo(
            e.status,
            common.as_ref().map(|c| c.amount),
            e.event_time,
            &UndoFields {
                original_reference: e.original_rrn.as_deref(),
                original_event_time: e.original_event_time,
                refund_reference: e.refund_reference.as_deref(),
                refund_amount: e.refund_amount.as_deref(),
            },
            self.midnight_skew_ms,
            &mut bad,
        );
        (bad, common.zip(undo))
    }

    pub fn normalise(
        &self,
        e: QrisPayment,
        meta: &MessageMeta<'_>,
    ) -> Result<Processed<QrisRow>, Vec<Invalid>> {
        let (bad, common) = self.check(&e, meta);
        let Some((
            CommonChecked {
                region,
                amount,
                time: t,
            },
            undo,
        )) = common.filter(|_| bad.is_empty())
        else {
            return Err(bad);
        };
        let original_reference = opt(e.original_rrn);
        let refund_reference = opt(e.refund_reference);
        let payment_rrn = if original_reference.is_empty() {
            e.rrn.as_str()
        } else {
            original_reference.as_str()
        };
        let keys = report_keys(
            KEY_DOMAINS,
            &[
                &e.nmid,
                payment_rrn,
                Decimal::of(amount.total_sen()).as_str(),
            ],
            e.status,
            &refund_reference,
            t,
            self.midnight_skew_ms,
        );
        let event_date = umkm_core::time::days_since_epoch(t.wib_date());
        let status = e.status.as_str();
        let priority = match e.provider_role {
            ProviderRole::Acquirer => 2,
            ProviderRole::Issuer => 1,
        };
        let row = QrisRow {
            dedup_key: keys.dedup.hex_inline(),
            payment_key: keys.payment.hex_inline(),
            provider_role: match e.provider_role {
                ProviderRole::Issuer => "issuer",
                ProviderRole::Acquirer => "acquirer",
            }
            .into(),
            issuer_reference: opt(e.issuer_reference),
            acquirer_reference: opt(e.acquirer_reference),
            partner_reference: opt(e.partner_reference),
            issuer_id: opt(e.issuer_id),
            acquirer_id: opt(e.acquirer_id),
            merchant_pan: opt(e.merchant_pan),
            sector: reference::sector_for_mcc(&e.mcc).into(),
            merchant_criteria: match e.merchant_criteria {
                MerchantCriteria::UMI => "UMI",
                MerchantCriteria::UKE => "UKE",
                MerchantCriteria::UME => "UME",
                MerchantCriteria::UBE => "UBE",
                MerchantCriteria::URE => "URE",
            }
            .into(),
            merchant_city: opt(e.merchant_city),
            merchant_postal_code: opt(e.merchant_postal_code),
            region_code: region.code,
            province_code: region.province,
            kab_kota_code: region.kab_kota,
            kecamatan_code: region.kecamatan,
            qr_mode: match e.qr_mode {
                QrMode::MpmStatic => "mpm_static",
                QrMode::MpmDynamic => "mpm_dynamic",
                QrMode::Cpm => "cpm",
                QrMode::Ttm => "ttm",
            }
            .into(),
            amount_idr: undo.fact_amount.whole,
            amount_minor: undo.fact_amount.sen,
            payment_amount_idr: amount.whole,
            refund_reference,
            original_reference,
            original_reference_no: opt(e.original_reference_no),
            original_partner_reference_no: opt(e.original_partner_reference_no),
            original_event_time_ms: e.original_event_time.unwrap_or(0),
            currency: "IDR".into(),
            status: status.into(),
            event_time: t.utc_secs(),
            event_time_ms: t.utc_ms,
            event_date,
            payer_hash: e
                .payer_id
                .as_deref()
                .filter(|p| !p.trim().is_empty())
                .map(|p| self.hasher.hash(p))
                .unwrap_or_default(),
            schema_id: meta.schema_id,
            source_topic: meta.topic.clone(),
            source_partition: meta.partition,
            source_offset: meta.offset,
            ingested_at: meta.now_secs,
            event_id: e.event_id,
            provider_id: e.provider_id,
            rrn: e.rrn,
            nmid: e.nmid,
            mcc: e.mcc,
            merchant_name: trimmed(e.merchant_name),
        };
        Ok(Processed {
            key: keys.dedup,
            alt: keys.alt,
            priority,
            event_date,
            row,
        })
    }
}

impl Family for Qris {
    type Event = QrisPayment;
    type Row = QrisRow;
    const SERVICE: &'static str = "qris-consumer";
    const TABLE: &'static str = "qris_payments";
    const DEFAULT_TOPIC: &'static str = "payments.qris.v1";
    const DEFAULT_GROUP: &'static str = "umkm-qris-consumer";
    const READER_SCHEMA: &'static str = READER_SCHEMA;

    fn build(v: &Validated) -> Result<Self, String> {
        Ok(Self::new(
            PiiHasher::new(v.pii_key.0.as_bytes())?,
            v.settings.dedup.midnight_skew_ms,
        )
        .with_regions(v.regions.clone()))
    }

    fn process(
        &self,
        event: QrisPayment,
        meta: &MessageMeta<'_>,
    ) -> Result<Processed<QrisRow>, Vec<Invalid>> {
        self.normalise(event, meta)
    }
}

#[cfg(test)]
mod tests;
