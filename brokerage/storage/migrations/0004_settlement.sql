-- Settlement: execution reports booked exactly once, cash and shares moved by them, impossible reports kept as
-- breaks for an operator, cancels asked of the exchange, and order events rich enough to replay to a client.

-- The order state machine as data: the same table as brokerage.domain.orders.ALLOWED_TRANSITIONS (a test holds
-- the two together). Settlement moves an order only along these rows: forward, never out of a terminal status.
CREATE TABLE order_transitions (
    from_status text NOT NULL,
    to_status   text NOT NULL,
    PRIMARY KEY (from_status, to_status)
);
INSERT INTO order_transitions (from_status, to_status) VALUES
    ('PLACED', 'SUBMITTED'), ('PLACED', 'PARTIALLY_FILLED'), ('PLACED', 'FILLED'), ('PLACED', 'REJECTED'),
    ('PLACED', 'CANCELED'),
    ('SUBMITTED', 'PARTIALLY_FILLED'), ('SUBMITTED', 'FILLED'), ('SUBMITTED', 'REJECTED'), ('SUBMITTED', 'CANCELED'),
    ('PARTIALLY_FILLED', 'PARTIALLY_FILLED'), ('PARTIALLY_FILLED', 'FILLED'), ('PARTIALLY_FILLED', 'CANCELED');

ALTER TABLE orders
    -- The exchange's last word: its final cumulative quantity and the status it ended in. The status follows
    -- only once the booked quantity reaches it, because reports arrive out of order.
    ADD COLUMN venue_final_quantity bigint CHECK (venue_final_quantity >= 0),
    ADD COLUMN venue_final_status   text CHECK (venue_final_status IN ('FILLED', 'CANCELED', 'REJECTED')),
    ADD COLUMN cancel_sent_at       timestamptz,  -- a worker asked the exchange to cancel
    -- The sweeper last re-drove the cancel's message: a mark of its own, since the question about silent orders
    -- renews swept_at of these very orders (at the exchange, often silent) and would starve the cancel's re-drive.
    ADD COLUMN cancel_swept_at      timestamptz;

-- Every execution report booked, of every type: the dedupe of at-least-once callbacks. Fills carry a quantity
-- and a price; the others record the exchange's word (accepted, canceled, rejected) with its cumulative quantity.
ALTER TABLE executions
    ADD COLUMN exec_type text NOT NULL DEFAULT 'FILL'
        CHECK (exec_type IN ('NEW', 'PARTIAL_FILL', 'FILL', 'CANCELED', 'REJECTED')),
    ADD COLUMN cumulative_quantity bigint NOT NULL DEFAULT 0,
    ADD COLUMN reason text NOT NULL DEFAULT '',
    ALTER COLUMN price DROP NOT NULL,
    DROP CONSTRAINT executions_quantity_check,
    ADD CHECK ((exec_type IN ('PARTIAL_FILL', 'FILL')) = (quantity > 0 AND price IS NOT NULL)),
    ADD CHECK (quantity >= 0);

-- Reports that cannot be applied (an unknown order, an overfill, a fill beyond the protection price, ...):
-- acknowledged to the exchange, kept here for an operator, and never moving a balance. One per exec_id.
CREATE TABLE breaks (
    break_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    exec_id     text NOT NULL UNIQUE,
    order_id    text NOT NULL,
    kind        text NOT NULL,
    detail      text NOT NULL,
    report      jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz
);
CREATE INDEX breaks_open ON breaks (recorded_at) WHERE resolved_at IS NULL;

-- Order events carry what a client watching its orders needs to see of each change.
ALTER TABLE order_events
    ADD COLUMN average_fill_price numeric(20,4),
    ADD COLUMN cancel_requested   boolean NOT NULL DEFAULT false;

-- Messages on a shard are of two kinds (OrderPlaced, CancelRequested); the relay sends the kind as a header.
ALTER TABLE outbox ADD COLUMN message_type text NOT NULL DEFAULT 'OrderPlaced';

CREATE OR REPLACE FUNCTION append_order_event(p_order orders, p_event_type text) RETURNS void
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_sequence bigint;
BEGIN
    UPDATE balances SET next_event_sequence = next_event_sequence + 1
     WHERE customer_id = p_order.customer_id
    RETURNING next_event_sequence - 1 INTO v_sequence;
    INSERT INTO order_events (customer_id, sequence, order_id, event_type, status, status_reason, filled_quantity,
                              average_fill_price, cancel_requested)
    VALUES (p_order.customer_id, v_sequence, p_order.order_id, p_event_type, p_order.status, p_order.status_reason,
            p_order.filled_quantity, p_order.average_fill_price,
            p_order.cancel_requested_at IS NOT NULL AND p_order.status NOT IN ('FILLED', 'REJECTED', 'CANCELED'));
END;
$$;

-- Why a report cannot be applied to the order as it stands, or null when it can. Reports may come late, twice or
-- out of order; what no order of events can explain is impossible.
CREATE FUNCTION settlement_break(p_order orders, p_exec_type text, p_last_quantity bigint, p_last_price numeric,
                                 p_cumulative_quantity bigint) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_filled bigint := p_order.filled_quantity;
BEGIN
    IF p_exec_type IN ('PARTIAL_FILL', 'FILL') THEN
        IF p_last_quantity <= 0 OR p_last_price IS NULL OR p_last_price <= 0 THEN
            RETURN 'malformed_fill: a fill needs a positive quantity and price';
        END IF;
        -- Money as the books keep it: at most 4 decimals (numeric(20,4)), the amount below 1e16. Otherwise each
        -- money column would round on its own (a reservation would keep a residue no order holds), or the
        -- booking would fail and the exchange resend the report for ever.
        IF p_last_price <> round(p_last_price, 4) OR p_last_quantity * p_last_price >= 1e16 THEN
            RETURN format('malformed_fill: %s at %s is not an amount the books can hold', p_last_quantity, p_last_price);
        END IF;
        IF p_order.status IN ('REJECTED', 'CANCELED', 'FILLED') THEN
            RETURN format('fill_after_end: the order is %s with %s filled, as the exchange said',
                          p_order.status, v_filled);
        END IF;
        v_filled := v_filled + p_last_quantity;
        IF v_filled > p_order.quantity THEN
            RETURN format('overfill: %s filled of an order for %s', v_filled, p_order.quantity);
        END IF;
        IF v_filled > p_order.venue_final_quantity THEN
            RETURN format('beyond_final: %s filled, but the exchange ended the order at %s',
                          v_filled, p_order.venue_final_quantity);
        END IF;
        IF (p_order.side = 'BUY' AND p_last_price > p_order.protection_price)
           OR (p_order.side = 'SELL' AND p_last_price < p_order.protection_price) THEN
            RETURN format('beyond_protection: filled at %s, protection price %s',
                          format_money(p_last_price), format_money(p_order.protection_price));
        END IF;
    END IF;
    IF p_exec_type IN ('FILL', 'CANCELED', 'REJECTED') THEN
        IF p_cumulative_quantity > p_order.quantity OR p_cumulative_quantity < v_filled THEN
            RETURN format('impossible_final: the exchange ended the order at %s, %s booked, ordered %s',
                          p_cumulative_quantity, v_filled, p_order.quantity);
        END IF;
        IF p_exec_type = 'FILL' AND p_cumulative_quantity <> p_order.quantity THEN
            RETURN format('impossible_final: filled in full at %s of %s', p_cumulative_quantity, p_order.quantity);
        END IF;
        IF p_exec_type = 'REJECTED' AND p_cumulative_quantity > 0 THEN
            RETURN format('impossible_final: rejected after %s filled', p_cumulative_quantity);
        END IF;
        IF p_order.venue_final_quantity IS DISTINCT FROM NULL
           AND (p_order.venue_final_quantity, p_order.venue_final_status)
               IS DISTINCT FROM (p_cumulative_quantity, CASE p_exec_type WHEN 'FILL' THEN 'FILLED'
                                                        WHEN 'CANCELED' THEN 'CANCELED' ELSE 'REJECTED' END) THEN
            RETURN format('conflicting_final: the exchange ended the order %s at %s before, now %s at %s',
                          p_order.venue_final_status, p_order.venue_final_quantity, p_exec_type, p_cumulative_quantity);
        END IF;
    END IF;
    IF p_order.status IN ('REJECTED', 'CANCELED') AND p_order.venue_final_status IS NULL
       AND p_order.claimed_at IS NULL THEN
        RETURN 'never_sent: we ended the order before any worker took it to the exchange';
    END IF;
    RETURN NULL;
END;
$$;

-- Books one fill: a buy's cost leaves its reservation and its shares arrive (at a new average cost); a sell's
-- shares leave their reservation and its proceeds arrive. Every movement is a ledger entry. The caller holds the
-- customer's balances row lock and the order's row lock; returns the order with what it still holds.
CREATE FUNCTION book_fill(p_order orders, p_exec_id text, p_quantity bigint, p_price numeric) RETURNS orders
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_amount numeric := p_quantity * p_price;
    v_order  orders := p_order;
BEGIN
    IF p_order.side = 'BUY' THEN
        UPDATE balances SET reserved = reserved - v_amount, updated_at = now()
         WHERE customer_id = p_order.customer_id;
        INSERT INTO positions AS p (customer_id, symbol, quantity, average_cost)
        VALUES (p_order.customer_id, p_order.symbol, p_quantity, p_price)
        ON CONFLICT (customer_id, symbol) DO UPDATE
           SET average_cost = round((p.average_cost * p.quantity + v_amount) / (p.quantity + p_quantity), 4),
               quantity = p.quantity + p_quantity, updated_at = now();
        INSERT INTO ledger_entries (customer_id, asset, kind, available_delta, reserved_delta, order_id, exec_id)
        VALUES (p_order.customer_id, 'USD', 'fill', 0, -v_amount, p_order.order_id, p_exec_id),
               (p_order.customer_id, p_order.symbol, 'fill', p_quantity, 0, p_order.order_id, p_exec_id);
        v_order.reserved_cash := v_order.reserved_cash - v_amount;
    ELSE
        UPDATE positions SET quantity = quantity - p_quantity, reserved = reserved - p_quantity,
                             average_cost = CASE WHEN quantity = p_quantity THEN 0 ELSE average_cost END,
                             updated_at = now()
         WHERE customer_id = p_order.customer_id AND symbol = p_order.symbol;
        UPDATE balances SET available = available + v_amount, updated_at = now()
         WHERE customer_id = p_order.customer_id;
        INSERT INTO ledger_entries (customer_id, asset, kind, available_delta, reserved_delta, order_id, exec_id)
        VALUES (p_order.customer_id, p_order.symbol, 'fill', 0, -p_quantity, p_order.order_id, p_exec_id),
               (p_order.customer_id, 'USD', 'fill', v_amount, 0, p_order.order_id, p_exec_id);
        v_order.reserved_shares := v_order.reserved_shares - p_quantity;
    END IF;
    v_order.average_fill_price := round(
        (coalesce(p_order.average_fill_price, 0) * p_order.filled_quantity + v_amount)
        / (p_order.filled_quantity + p_quantity), 4);
    v_order.filled_quantity := p_order.filled_quantity + p_quantity;
    RETURN v_order;
END;
$$;

-- Rule 7: applies one execution report exactly once. Money follows executions: every new exec_id that is
-- possible is booked whatever the order's status; the status only moves forward, to the furthest the booked
-- facts allow; the unused reservation is released only once the booked quantity reaches the exchange's final
-- cumulative quantity. Returns what happened ('applied', 'duplicate' or 'break'), the customer, and the
-- customer's last event sequence when the report changed what a client sees.
-- A report must be about the order as we sent it. One naming another symbol, the other side or another order
-- quantity would book its fill as shares of our order's stock: it is a break ('mismatch'). The symbol and the
-- order quantity are checked where the report names them; the side is always there.
CREATE FUNCTION report_mismatch(p_order orders, p_report jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT format('mismatch: the report is for %s %s %s, the order is %s %s %s',
                  p_report->>'side', p_report->>'order_quantity', p_report->>'symbol',
                  p_order.side, p_order.quantity, p_order.symbol)
     WHERE coalesce(p_report->>'symbol', '') NOT IN ('', p_order.symbol)
        OR coalesce(p_report->>'side', '') NOT IN ('', p_order.side)
        OR coalesce((p_report->>'order_quantity')::bigint, 0) NOT IN (0, p_order.quantity)
$$;

CREATE FUNCTION apply_execution_report(
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

    -- Written only when something of it changed: the exchange's NEW for an order already recorded SUBMITTED
    -- (one for every order) would otherwise make a new tuple in every index (updated_at is in orders_open).
    IF v_order IS DISTINCT FROM v_before THEN
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

-- Group commit: several reports in one transaction, taken customer by customer (so concurrent batches lock
-- customers in one order and cannot deadlock), each customer's in the order given. One row per report, in the
-- order given.
CREATE FUNCTION apply_execution_reports(
    p_exec_ids text[],
    p_order_ids text[],
    p_venue_order_ids text[],
    p_exec_types text[],
    p_last_quantities bigint[],
    p_last_prices numeric[],
    p_cumulative_quantities bigint[],
    p_reasons text[],
    p_transact_times timestamptz[],
    p_reports jsonb[]
) RETURNS TABLE (ordinal integer, outcome text, customer_id text, events_through bigint)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_next record;
    v_result record;
BEGIN
    FOR v_next IN
        -- Joined on the order id itself, an index lookup per report (an array element as the join key would
        -- hash every row of orders, on every batch).
        SELECT r.i::integer AS i FROM unnest(p_order_ids) WITH ORDINALITY AS r (order_id, i)
          LEFT JOIN orders o USING (order_id)
         ORDER BY o.customer_id NULLS FIRST, r.i
    LOOP
        SELECT * INTO v_result FROM apply_execution_report(
            p_exec_ids[v_next.i], p_order_ids[v_next.i], p_venue_order_ids[v_next.i], p_exec_types[v_next.i],
            p_last_quantities[v_next.i], p_last_prices[v_next.i], p_cumulative_quantities[v_next.i],
            p_reasons[v_next.i], p_transact_times[v_next.i], p_reports[v_next.i]);
        RETURN QUERY SELECT v_next.i, v_result.outcome, v_result.customer_id, v_result.events_through;
    END LOOP;
END;
$$;

-- Cancels an order for the customer: one no worker has taken is canceled at once, its reservation released (as
-- cancel_placed_order); one at the exchange (or on its way there) gets a cancel request, which the shard's worker
-- takes to the exchange after anything of the customer still waiting, and whose outcome comes back as reports.
-- Returns the order as it now stands, or nothing when the customer has no such order.
CREATE FUNCTION cancel_order(p_customer_id text, p_order_id text, p_subject text, p_payload bytea)
RETURNS SETOF orders
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_order orders;
BEGIN
    SELECT * INTO v_order FROM cancel_placed_order(p_customer_id, p_order_id);  -- locks the customer first
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF v_order.status IN ('PLACED', 'SUBMITTED', 'PARTIALLY_FILLED') AND v_order.cancel_requested_at IS NULL THEN
        UPDATE orders SET cancel_requested_at = now(), updated_at = now() WHERE order_id = p_order_id
        RETURNING * INTO v_order;
        PERFORM append_order_event(v_order, 'cancel_requested');
        INSERT INTO outbox (dedupe_id, subject, payload, message_type)
        VALUES (p_order_id || ':cancel', p_subject, p_payload, 'CancelRequested');
    END IF;
    RETURN NEXT v_order;  -- canceled now, asked of the exchange, or as it stands (ended, or already asked)
END;
$$;

-- What the sweeper looks for: cancels the customer asked for that no worker has sent yet.
CREATE INDEX orders_cancel_unsent ON orders (cancel_requested_at)
 WHERE cancel_requested_at IS NOT NULL AND cancel_sent_at IS NULL;
