-- Refunds and cancellations name the payment they undo (contract revision 2, README "Refunds and
-- cancellations"). One ADD COLUMN per statement: 18.16 has no ADD COLUMN IF NOT EXISTS, so the
-- migration runner treats "column already exists" as done and a re-run after a crash halfway
-- completes the rest. Rows from before this migration read the defaults: a revision-1 refund is
-- of the whole payment.
ALTER TABLE ${database}.qris_payments ${on_cluster} ADD COLUMN payment_amount_idr Int64 DEFAULT amount_idr COMMENT 'the payment''s amount, whole rupiah: amount_idr, except for a partial refund, whose amount_idr is the refunded part';
ALTER TABLE ${database}.qris_payments ${on_cluster} ADD COLUMN refund_reference String COMMENT 'a refund''s own reference (SNAP partnerRefundNo), empty if not reported';
ALTER TABLE ${database}.qris_payments ${on_cluster} ADD COLUMN original_reference String COMMENT 'RRN of the payment a refund/cancellation undoes as the report named it (original_rrn); empty when it did not, and rrn is then the payment''s';
ALTER TABLE ${database}.qris_payments ${on_cluster} ADD COLUMN original_reference_no String COMMENT 'SNAP originalReferenceNo of the undone payment, empty if not reported';
ALTER TABLE ${database}.qris_payments ${on_cluster} ADD COLUMN original_partner_reference_no String COMMENT 'SNAP originalPartnerReferenceNo of the undone payment, empty if not reported';
ALTER TABLE ${database}.qris_payments ${on_cluster} ADD COLUMN original_event_time_ms Int64 COMMENT 'when the undone payment happened as the report said, Unix epoch ms; 0 if not reported';
ALTER TABLE ${database}.noncash_payments ${on_cluster} ADD COLUMN payment_amount_idr Int64 DEFAULT amount_idr COMMENT 'the payment''s amount, whole rupiah: amount_idr, except for a partial refund, whose amount_idr is the refunded part';
ALTER TABLE ${database}.noncash_payments ${on_cluster} ADD COLUMN refund_reference String COMMENT 'a refund''s own reference (SNAP partnerRefundNo), empty if not reported';
ALTER TABLE ${database}.noncash_payments ${on_cluster} ADD COLUMN original_reference String COMMENT 'reference_number of the payment a refund/cancellation undoes as the report named it; empty when it did not, and reference_number is then the payment''s';
ALTER TABLE ${database}.noncash_payments ${on_cluster} ADD COLUMN original_reference_no String COMMENT 'SNAP originalReferenceNo of the undone payment, empty if not reported';
ALTER TABLE ${database}.noncash_payments ${on_cluster} ADD COLUMN original_partner_reference_no String COMMENT 'SNAP originalPartnerReferenceNo of the undone payment, empty if not reported';
ALTER TABLE ${database}.noncash_payments ${on_cluster} ADD COLUMN original_event_time_ms Int64 COMMENT 'when the undone payment happened as the report said, Unix epoch ms; 0 if not reported';
