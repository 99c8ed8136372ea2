-- The functions the services call (place_orders, claim_for_submissions, record_submissions,
-- record_venue_rejections, apply_execution_reports, cancel_order) run with enable_seqscan = off: their plans are
-- cached for the session, and a plan chosen while a table is small must not stay a sequential scan once it is
-- large. The helpers they call inherit the setting; a SET clause of their own made PostgreSQL save, set and restore
-- it on every call (measured: about a third of release_reservation's time, a tenth of a settlement's), and once
-- per order or per report that added up. (apply_execution_report, restated in 0007, sets nothing of its own.)
ALTER FUNCTION place_order(text, text, text, text, text, bigint, numeric, numeric, text, text, bytea)
    RESET enable_seqscan;
ALTER FUNCTION claim_for_submission(text, integer) RESET enable_seqscan;
ALTER FUNCTION record_submitted(text, text) RESET enable_seqscan;
ALTER FUNCTION record_venue_rejection(text, text) RESET enable_seqscan;
ALTER FUNCTION cancel_placed_order(text, text) RESET enable_seqscan;
ALTER FUNCTION release_reservation(text) RESET enable_seqscan;
ALTER FUNCTION append_order_event(orders, text) RESET enable_seqscan;
