-- Repairs without hand edits (brokerctl, through the operations service): every repair is an audit row (what, to
-- which break or order, who, when, why) and, where money moves, balanced transfers naming it; none edits a balance.
--
-- A break is resolved by the rule of its kind, against the venue's drop copy, which the operations service reads:
-- - accepted_venue: the drop copy has the execution. Whatever the venue did is booked under its exec_id (the
--   service books the drop copy's report through settlement, where a malformed or refused copy left nothing), and a
--   real fill already booked to the error account stays there, the firm's.
-- - written_off: the drop copy has no such execution, so nothing happened at the venue: what the report booked to the
--   error account is reversed, and nothing else moves.
-- A parked order is redriven, never resolved by hand: the venue is asked again (its reports settle what it has), or,
-- when it never received the order, the order is sent again. A resolve or a redrive is idempotent: done once, asked
-- again it answers with what was done.

-- Marks a break resolved with an audit row; the break as it now stands, and whether this call resolved it. An
-- operator's acceptance of the venue's word stands over settlement's superseding of a malformed break (which the
-- booking of the drop copy's execution, just before, does).
CREATE FUNCTION resolve_break(p_break_id bigint, p_resolution text, p_operator text, p_note text)
RETURNS TABLE (resolved breaks, repaired boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_break   breaks;
    v_repair  bigint;
BEGIN
    SELECT * INTO v_break FROM breaks WHERE break_id = p_break_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF v_break.resolved_at IS NOT NULL
       AND NOT (v_break.resolution = 'superseded' AND p_resolution = 'accepted_venue'
                AND NOT EXISTS (SELECT 1 FROM repairs r WHERE r.break_id = p_break_id)) THEN
        RETURN QUERY SELECT v_break, false;
        RETURN;
    END IF;
    INSERT INTO repairs (action, break_id, order_id, operator, note)
    VALUES (p_resolution, p_break_id, v_break.order_id, p_operator, p_note)
    RETURNING repair_id INTO v_repair;
    IF p_resolution = 'written_off' THEN
        -- What the report put in the error account goes back: each of its transfers reversed, under the repair.
        INSERT INTO transfers (transfer_key, kind, asset, customer_id, debit_account, credit_account, amount,
                               order_id, exec_id, break_id, repair_id)
        SELECT v_repair || ':' || row_number() OVER (ORDER BY t.transfer_id), 'repair', t.asset, t.customer_id,
               t.credit_account, t.debit_account, t.amount, t.order_id, t.exec_id, t.break_id, v_repair
          FROM transfers t WHERE t.break_id = p_break_id AND t.kind = 'error';
    END IF;
    UPDATE breaks SET resolved_at = now(), resolution = p_resolution, resolved_by = p_operator,
                      resolution_note = p_note
     WHERE break_id = p_break_id
    RETURNING * INTO v_break;
    RETURN QUERY SELECT v_break, true;
END;
$$;

-- An order holding its customer (parked, or backing off) sent again, the venue having never received it: its unknown
-- outcomes start afresh, its retry is due now (the sweeper rings its wake-up), a break that parked it closed as
-- redriven. Returns the order; null unless it still holds its customer.
CREATE FUNCTION redrive_waiting_order(p_order_id text, p_operator text, p_note text) RETURNS orders
LANGUAGE plpgsql AS $$
DECLARE
    v_order orders;
BEGIN
    SELECT * INTO v_order FROM orders WHERE order_id = p_order_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM balances WHERE customer_id = v_order.customer_id FOR UPDATE;
    SELECT * INTO v_order FROM orders WHERE order_id = p_order_id FOR UPDATE;
    IF v_order.status <> 'PLACED' OR v_order.held_by IS DISTINCT FROM v_order.order_id THEN
        RETURN NULL;
    END IF;
    INSERT INTO repairs (action, order_id, operator, note) VALUES ('redriven', p_order_id, p_operator, p_note);
    UPDATE breaks SET resolved_at = now(), resolution = 'redriven', resolved_by = p_operator, resolution_note = p_note
     WHERE order_id = p_order_id AND kind = 'parked' AND resolved_at IS NULL;
    UPDATE orders SET parked_at = NULL, unknown_outcomes = 0, retry_at = now()
     WHERE order_id = p_order_id
    RETURNING * INTO v_order;
    RETURN v_order;
END;
$$;

-- An order we hold as at the venue, nothing of it filled, that the venue never received (it lost it, or never took
-- it): asked to cancel it, the venue answered so and keeps a tombstone. CANCELED here with the reason, released, with
-- an audit row. Returns the order; null unless it was at the venue unfilled.
CREATE FUNCTION end_lost_order(p_order_id text, p_reason text, p_operator text, p_note text) RETURNS orders
LANGUAGE plpgsql AS $$
DECLARE
    v_order orders;
BEGIN
    SELECT * INTO v_order FROM orders WHERE order_id = p_order_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM balances WHERE customer_id = v_order.customer_id FOR UPDATE;
    SELECT * INTO v_order FROM orders WHERE order_id = p_order_id FOR UPDATE;
    IF v_order.status <> 'SUBMITTED' OR v_order.filled_quantity > 0 OR NOT order_can_move(v_order.status, 'CANCELED')
    THEN
        RETURN NULL;
    END IF;
    INSERT INTO repairs (action, order_id, operator, note) VALUES ('ended_lost', p_order_id, p_operator, p_note);
    PERFORM release_reservation(v_order);
    UPDATE orders SET status = 'CANCELED', status_reason = p_reason, reserved_cash = 0, reserved_shares = 0,
                      tombstoned_at = now(), updated_at = now()
     WHERE order_id = p_order_id
    RETURNING * INTO v_order;
    PERFORM append_order_event(v_order, 'canceled');
    RETURN v_order;
END;
$$;
