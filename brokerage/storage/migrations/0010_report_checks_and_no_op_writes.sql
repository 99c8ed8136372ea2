-- Two changes to applying a report.
--
-- A report must be about the order as we sent it. One naming another symbol, the other side or another order
-- quantity would have booked its fill as shares of our order's stock: it is a break ('mismatch'), acknowledged,
-- kept for an operator, and no money moves. (The symbol and the order quantity are checked where the report
-- names them; the side is always there.)
--
-- A report that changes nothing of the order (the exchange's NEW for an order the worker already recorded
-- SUBMITTED: one for every order) still rewrote its row, and since updated_at is indexed (orders_open), as a new
-- tuple in every index. The report is booked as before (its execution row keeps it idempotent); the order's row
-- is written only when something of it changed.

CREATE FUNCTION report_mismatch(p_order orders, p_report jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT format('mismatch: the report is for %s %s %s, the order is %s %s %s',
                  p_report->>'side', p_report->>'order_quantity', p_report->>'symbol',
                  p_order.side, p_order.quantity, p_order.symbol)
     WHERE coalesce(p_report->>'symbol', '') NOT IN ('', p_order.symbol)
        OR coalesce(p_report->>'side', '') NOT IN ('', p_order.side)
        OR coalesce((p_report->>'order_quantity')::bigint, 0) NOT IN (0, p_order.quantity)
$$;

CREATE OR REPLACE FUNCTION apply_execution_report(
    p_exec_id text,
    p_order_id text,
    p_venue_order_id text,
    p_exec_type text,
    p_last_quantity bigint,
    p_last_price numeric,
    p_cumulative_quantity bigint,
    p_reason text,
    p_transact_time timestamptz,
    p_report jsonb
) RETURNS TABLE (outcome text, customer_id text, events_through bigint)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_customer text;
    v_order    orders;
    v_before   orders;
    v_problem  text;
    v_target   text;
    v_ended    boolean;
BEGIN
    SELECT o.customer_id INTO v_customer FROM orders o WHERE o.order_id = p_order_id;
    IF NOT FOUND THEN
        INSERT INTO breaks (exec_id, order_id, kind, detail, report)
        VALUES (p_exec_id, p_order_id, 'unknown_order', 'no such order of ours', p_report)
        ON CONFLICT (exec_id) DO NOTHING;
        RETURN QUERY SELECT CASE WHEN FOUND THEN 'break' ELSE 'duplicate' END, NULL::text, NULL::bigint;
        RETURN;
    END IF;
    -- The customer's lock serialises this report with its twin and with the customer's other changes.
    PERFORM 1 FROM balances b WHERE b.customer_id = v_customer FOR UPDATE;
    IF EXISTS (SELECT 1 FROM executions e WHERE e.exec_id = p_exec_id)
       OR EXISTS (SELECT 1 FROM breaks k WHERE k.exec_id = p_exec_id) THEN
        RETURN QUERY SELECT 'duplicate', v_customer, NULL::bigint;
        RETURN;
    END IF;
    SELECT * INTO v_order FROM orders o WHERE o.order_id = p_order_id FOR UPDATE;
    v_before := v_order;

    v_problem := coalesce(report_mismatch(v_order, p_report),
                          settlement_break(v_order, p_exec_type, p_last_quantity, p_last_price, p_cumulative_quantity));
    IF v_problem IS NOT NULL THEN
        INSERT INTO breaks (exec_id, order_id, kind, detail, report)
        VALUES (p_exec_id, p_order_id, split_part(v_problem, ':', 1), v_problem, p_report);
        RETURN QUERY SELECT 'break', v_customer, NULL::bigint;
        RETURN;
    END IF;

    INSERT INTO executions (exec_id, order_id, venue_order_id, exec_type, quantity, price, cumulative_quantity,
                            reason, executed_at)
    VALUES (p_exec_id, p_order_id, p_venue_order_id, p_exec_type,
            CASE WHEN p_exec_type IN ('PARTIAL_FILL', 'FILL') THEN p_last_quantity ELSE 0 END,
            CASE WHEN p_exec_type IN ('PARTIAL_FILL', 'FILL') THEN p_last_price END,
            p_cumulative_quantity, p_reason, p_transact_time);
    IF p_exec_type IN ('PARTIAL_FILL', 'FILL') THEN
        v_order := book_fill(v_order, p_exec_id, p_last_quantity, p_last_price);
    END IF;
    IF p_exec_type IN ('FILL', 'CANCELED', 'REJECTED') THEN
        v_order.venue_final_quantity := p_cumulative_quantity;
        v_order.venue_final_status := CASE p_exec_type WHEN 'FILL' THEN 'FILLED'
                                                       WHEN 'CANCELED' THEN 'CANCELED' ELSE 'REJECTED' END;
        IF p_exec_type <> 'FILL' THEN
            v_order.status_reason := p_reason;
        END IF;
    END IF;
    v_order.venue_order_id := coalesce(v_order.venue_order_id, nullif(p_venue_order_id, ''));

    -- The furthest status the booked facts allow: the exchange's final one once every fill it counted is booked.
    v_target := CASE
        WHEN v_order.filled_quantity = v_order.venue_final_quantity THEN v_order.venue_final_status
        WHEN v_order.filled_quantity > 0 THEN 'PARTIALLY_FILLED'
        ELSE 'SUBMITTED' END;
    IF EXISTS (SELECT 1 FROM order_transitions t WHERE t.from_status = v_order.status AND t.to_status = v_target) THEN
        v_order.status := v_target;
    END IF;
    v_ended := v_order.status IN ('FILLED', 'CANCELED', 'REJECTED')
               AND v_before.status NOT IN ('FILLED', 'CANCELED', 'REJECTED');
    IF v_ended THEN  -- a terminal order holds nothing; release_reservation gives back the rest below
        v_order.reserved_cash := 0;
        v_order.reserved_shares := 0;
    END IF;

    IF v_order IS DISTINCT FROM v_before THEN  -- a NEW for an order already SUBMITTED changes nothing
        UPDATE orders SET status = v_order.status, status_reason = v_order.status_reason,
                          filled_quantity = v_order.filled_quantity, average_fill_price = v_order.average_fill_price,
                          reserved_cash = v_order.reserved_cash, reserved_shares = v_order.reserved_shares,
                          venue_order_id = v_order.venue_order_id,
                          venue_final_quantity = v_order.venue_final_quantity,
                          venue_final_status = v_order.venue_final_status, updated_at = now()
         WHERE order_id = p_order_id;
    END IF;
    IF v_ended THEN
        PERFORM release_reservation(p_order_id);  -- what the fills did not use, by the order's ledger entries
    END IF;

    IF (v_order.status, v_order.filled_quantity) IS DISTINCT FROM (v_before.status, v_before.filled_quantity) THEN
        PERFORM append_order_event(v_order, lower(v_order.status));
        RETURN QUERY SELECT 'applied', v_customer, (SELECT b.next_event_sequence - 1 FROM balances b
                                                     WHERE b.customer_id = v_customer);
        RETURN;
    END IF;
    RETURN QUERY SELECT 'applied', v_customer, NULL::bigint;
END;
$$;
