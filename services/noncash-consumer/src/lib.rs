//! Non-QRIS digital payments: the `payments.noncash.v1` contract (debit and credit card,
//! e-money, e-wallet, bank transfer, virtual account), its rules and the `noncash_payments`
//! row. The shared runtime does the rest.
//!
//! Deduplication (README "Deduplication keys"): one row per payment and status (per refund for
//! refunds). The payment is identified by (acquirer id, acquirer merchant id, reference number,
//! amount in sen), with no date, so a later refund names the same `payment_key`; one fact is
//! that plus status, refund reference and WIB date, with the neighbouring date's fact matched
//! near a WIB midnight. The issuer's, the acquirer's and a gateway's report of one payment, and
//! any redelivery, share the fact. Within one batch the acquirer's report wins, then the
//! gateway's, then the issuer's.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use umkm_core::Invalid;
use umkm_core::dedup::KeyHex;
use umkm_core::fields::{
    Decimal, Label, Shared, check_event_id, check_message_key, id_like, is_nmid, mid_ref, nmid_ref,
    opt, trimmed,
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

pub const READER_SCHEMA: &str = include_str!("../../../schemas/avro/noncash_payment.avsc");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProviderRole {
    Issuer,
    Acquirer,
    Gateway,
}

impl ProviderRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderRole::Issuer => "issuer",
            ProviderRole::Acquirer => "acquirer",
            ProviderRole::Gateway => "gateway",
        }
    }

    /// Within one batch the highest wins: the acquirer owns the merchant data.
    fn priority(self) -> u8 {
        match self {
            ProviderRole::Acquirer => 3,
            ProviderRole::Gateway => 2,
            ProviderRole::Issuer => 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Instrument {
    DebitCard,
    CreditCard,
    Emoney,
    Ewallet,
    BankTransfer,
    VirtualAccount,
}

impl Instrument {
    /// The `instrument` column value (also `v_payments.instrument`).
    pub fn as_str(self) -> &'static str {
        match self {
            Instrument::DebitCard => "debit_card",
            Instrument::CreditCard => "credit_card",
            Instrument::Emoney => "emoney",
            Instrument::Ewallet => "ewallet",
            Instrument::BankTransfer => "bank_transfer",
            Instrument::VirtualAccount => "virtual_account",
        }
    }
}

/// `schemas/avro/noncash_payment.avsc` (revision 2), field for field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoncashPayment {
    pub event_id: String,
    pub provider_id: String,
    pub provider_role: ProviderRole,
    pub instrument: Instrument,
    pub reference_number: String,
    pub approval_code: Option<String>,
    pub provider_reference: Option<String>,
    pub partner_reference: Option<String>,
    pub issuer_id: Option<String>,
    pub acquirer_id: String,
    pub merchant_id: String,
    pub terminal_id: Option<String>,
    pub nmid: Option<String>,
    pub mcc: String,
    pub merchant_name: String,
    pub region_code: String,
    pub amount: String,
    pub currency: String,
    pub status: PaymentStatus,
    pub event_time: i64,
    pub masked_account: Option<String>,
    #[serde(default)]
    pub original_reference_number: Option<String>,
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

/// One row of `noncash_payments` (schemas/clickhouse/0006_noncash_payments.sql), column for
/// column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct NoncashRow {
    pub dedup_key: KeyHex,
    pub payment_key: KeyHex,
    pub event_id: String,
    pub provider_id: String,
    pub provider_role: Label,
    pub instrument: Label,
    pub reference_number: String,
    pub approval_code: String,
    pub provider_reference: String,
    pub partner_reference: String,
    pub issuer_id: String,
    pub acquirer_id: String,
    pub merchant_id: String,
    pub terminal_id: String,
    pub nmid: String,
    pub merchant_ref: String,
    pub mcc: String,
    pub sector: Label,
    pub merchant_name: String,
    pub region_code: Shared,
    pub province_code: Shared,
    pub kab_kota_code: Shared,
    pub kecamatan_code: Shared,
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

/// The Kafka message key of a report: `<acquirer_id>:<merchant_id>`, so that every report of
/// a merchant's payments shares a partition.
pub fn message_key(acquirer_id: &str, merchant_id: &str) -> String {
    format!("{acquirer_id}:{merchant_id}")
}

/// Hash domains of the non-cash keys (`umkm_core::payment::report_keys`).
pub const KEY_DOMAINS: KeyDomains = KeyDomains {
    payment: "noncash-payment-v2",
    fact: "noncash-v2",
};

pub struct Noncash {
    hasher: PiiHasher,
    midnight_skew_ms: i64,
    regions: Arc<Regions>,
}

impl Noncash {
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
    pub fn validate(&self, e: &NoncashPayment, meta: &MessageMeta<'_>) -> Vec<Invalid> {
        self.check(e, meta).0
    }

    /// Every rule, and the parsed common fields when they all pass.
    fn check(
        &self,
        e: &NoncashPayment,
        meta: &MessageMeta<'_>,
    ) -> (Vec<Invalid>, Option<(CommonChecked, UndoChecked)>) {
        let mut bad = Vec::new();
        check_event_id(&e.event_id, &mut bad);
        if e.provider_id.trim().is_empty() {
            bad.push(Invalid::new("provider_id", "provider_id is empty"));
        }
        if !id_like(&e.reference_number, 64) {
            bad.push(Invalid::new(
                "reference_format",
                format!(
                    "reference_number {:?} is not 1-64 characters of [A-Za-z0-9-_.:/]",
                    e.reference_number
                ),
            ));
        }
        if !(e.acquirer_id.len() >= 3 && id_like(&e.acquirer_id, 16)) {
            bad.push(Invalid::new(
                "acquirer_id_format",
                format!("acquirer_id {:?} is not 3-16 id characters", e.acquirer_id),
            ));
        }
        if !id_like(&e.merchant_id, 32) {
            bad.push(Invalid::new(
                "merchant_id_format",
                format!(
                    "merchant_id {:?} is not 1-32 characters of [A-Za-z0-9-_.:/]",
                    e.merchant_id
                ),
            ));
        }
        let want_key = message_key(&e.acquirer_id, &e.merchant_id);
        check_message_key(meta.key, &want_key, "acquirer_id:merchant_id", &mut bad);
        if let Some(t) = &e.terminal_id
            && !t.is_empty()
            && !id_like(t, 16)
        {
            bad.push(Invalid::new(
                "terminal_id_format",
                "terminal_id is not 1-16 id characters",
            ));
        }
        if let Some(n) = &e.nmid
            && !is_nmid(n)
        {
            bad.push(Invalid::new(
                "nmid_format",
                format!("nmid {n:?} is not 'ID' followed by 13 digits"),
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
        if let Some(r) = &e.original_reference_number
            && !id_like(r, 64)
        {
            bad.push(Invalid::new(
                "reference_format",
                format!(
                    "original_reference_number {r:?} is not 1-64 characters of [A-Za-z0-9-_.:/]"
                ),
            ));
        }
        let undo = check_undo(
            e.status,
            common.as_ref().map(|c| c.amount),
            e.event_time,
            &UndoFields {
                original_reference: e.original_reference_number.as_deref(),
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
        e: NoncashPayment,
        meta: &MessageMeta<'_>,
    ) -> Result<Processed<NoncashRow>, Vec<Invalid>> {
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
        let original_reference = opt(e.original_reference_number);
        let refund_reference = opt(e.refund_reference);
        let payment_reference = if original_reference.is_empty() {
            e.reference_number.as_str()
        } else {
            original_reference.as_str()
        };
        let keys = report_keys(
            KEY_DOMAINS,
            &[
                &e.acquirer_id,
                &e.merchant_id,
                payment_reference,
                Decimal::of(amount.total_sen()).as_str(),
            ],
            e.status,
            &refund_reference,
            t,
            self.midnight_skew_ms,
        );
        let status = e.status.as_str();
        let event_date = umkm_core::time::days_since_epoch(t.wib_date());
        let nmid = opt(e.nmid);
        let merchant_ref = if nmid.is_empty() {
            mid_ref(&e.acquirer_id, &e.merchant_id)
        } else {
            nmid_ref(&nmid)
        };
        let row = NoncashRow {
            dedup_key: keys.dedup.hex_inline(),
            payment_key: keys.payment.hex_inline(),
            provider_role: e.provider_role.as_str().into(),
            instrument: e.instrument.as_str().into(),
            approval_code: opt(e.approval_code),
            provider_reference: opt(e.provider_reference),
            partner_reference: opt(e.partner_reference),
            issuer_id: opt(e.issuer_id),
            terminal_id: opt(e.terminal_id),
            nmid,
            merchant_ref,
            sector: reference::sector_for_mcc(&e.mcc).into(),
            merchant_name: trimmed(e.merchant_name),
            region_code: region.code,
            province_code: region.province,
            kab_kota_code: region.kab_kota,
            kecamatan_code: region.kecamatan,
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
                .masked_account
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
            reference_number: e.reference_number,
            acquirer_id: e.acquirer_id,
            merchant_id: e.merchant_id,
            mcc: e.mcc,
        };
        Ok(Processed {
            key: keys.dedup,
            alt: keys.alt,
            priority: e.provider_role.priority(),
            event_date,
            row,
        })
    }
}

impl Family for Noncash {
    type Event = NoncashPayment;
    type Row = NoncashRow;
    const SERVICE: &'static str = "noncash-consumer";
    const TABLE: &'static str = "noncash_payments";
    const DEFAULT_TOPIC: &'static str = "payments.noncash.v1";
    const DEFAULT_GROUP: &'static str = "umkm-noncash-consumer";
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
        event: NoncashPayment,
        meta: &MessageMeta<'_>,
    ) -> Result<Processed<NoncashRow>, Vec<Invalid>> {
        self.normalise(event, meta)
    }
}

#[cfg(test)]
mod tests;
