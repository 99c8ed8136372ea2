-- Placement and cancellation as single server-side transactions: one round trip each, and no window in which
-- a lost connection leaves half a change. Every per-customer transaction locks the customer's balances row
-- first, so a customer's changes are serialised and never deadlock each other.
--
-- These functions only ever look rows up by key. PL/pgSQL caches a generic plan per statement; planned while
-- a table looked empty (a fresh deployment, just analyzed) that plan is a sequential scan, and it would stay
-- cached while the table grows, making every placement scan every order. enable_seqscan = off pins them to
-- their indexes whatever the statistics say.

-- Money in messages people read: at least two decimals, no trailing zeros beyond them (as Python's
-- brokerage.domain.money.format_decimal).
CREATE FUNCTION format_money(p_amount numeric) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN scale(trim_scale(p_amount)) <= 2 THEN round(p_amount, 2)::text
                ELSE trim_scale(p_amount)::text END
$$;

CREATE FUNCTION place_order(
    p_order_id text,
    p_customer_id text,
    p_client_order_id text,
    p_symbol text,
    p_side text,
    p_quantity bigint,
    p_protection_price numeric,
    p_reserve_cash numeric,   -- for a buy: quantity x protection price; 0 for a sell
    p_reject_reason text,     -- decided before the transaction (halted, no quote, ...); null to try to reserve
    p_subject text,           -- where the relay publishes the order
    p_payload bytea
) RETURNS orders  -- null for an unknown customer
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_balance balances;
    v_order   orders;
    v_status  text := 'PLACED';
    v_reason  text := coalesce(p_reject_reason, '');
    v_held    bigint;
    v_counted boolean := false;  -- the customer's sequences already taken by the reserving update
BEGIN
    -- Rule 3: the row lock orders the customer's placements; the sequence is taken under it.
    SELECT * INTO v_balance FROM balances WHERE customer_id = p_customer_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    -- Rule 2: a retry (also one that waited on the lock above) returns the first order and reserves nothing.
    SELECT * INTO v_order FROM orders
     WHERE customer_id = p_customer_id AND client_order_id = p_client_order_id;
    IF FOUND THEN
        RETURN v_order;
    END IF;

    -- Rule 1: reserve with a guarded update (which also takes the sequences); no row updated means not enough.
    IF p_reject_reason IS NULL AND p_side = 'BUY' THEN
        UPDATE balances SET available = available - p_reserve_cash, reserved = reserved + p_reserve_cash,
                            next_order_sequence = next_order_sequence + 1,
                            next_event_sequence = next_event_sequence + 1,
                            updated_at = now()
         WHERE customer_id = p_customer_id AND available >= p_reserve_cash;
        v_counted := FOUND;
        IF NOT FOUND THEN
            v_status := 'REJECTED';
            v_reason := format('insufficient buying power: requires %s, available %s',
                               format_money(p_reserve_cash), format_money(v_balance.available));
        END IF;
    ELSIF p_reject_reason IS NULL AND p_side = 'SELL' THEN
        UPDATE positions SET reserved = reserved + p_quantity, updated_at = now()
         WHERE customer_id = p_customer_id AND symbol = p_symbol AND quantity - reserved >= p_quantity;
        IF NOT FOUND THEN
            SELECT quantity - reserved INTO v_held FROM positions
             WHERE customer_id = p_customer_id AND symbol = p_symbol;
            v_status := 'REJECTED';
            v_reason := format('insufficient shares: requires %s, available %s', p_quantity, coalesce(v_held, 0));
        END IF;
    ELSE
        v_status := 'REJECTED';
    END IF;

    INSERT INTO orders (order_id, client_order_id, customer_id, sequence, symbol, side, quantity,
                        protection_price, reserved_cash, reserved_shares, status, status_reason)
    VALUES (p_order_id, p_client_order_id, p_customer_id, v_balance.next_order_sequence, p_symbol, p_side,
            p_quantity, p_protection_price,
            CASE WHEN v_status = 'PLACED' AND p_side = 'BUY' THEN p_reserve_cash ELSE 0 END,
            CASE WHEN v_status = 'PLACED' AND p_side = 'SELL' THEN p_quantity ELSE 0 END,
            v_status, v_reason)
    ON CONFLICT DO NOTHING
    RETURNING * INTO v_order;
    IF NOT FOUND THEN
        -- Unreachable while the lock above is held; refuse rather than reserve twice.
        RAISE EXCEPTION 'order % conflicts with an existing order', p_order_id USING ERRCODE = 'unique_violation';
    END IF;

    IF NOT v_counted THEN
        UPDATE balances SET next_order_sequence = next_order_sequence + 1,
                            next_event_sequence = next_event_sequence + 1,
                            updated_at = now()
         WHERE customer_id = p_customer_id;
    END IF;

    INSERT INTO order_events (customer_id, sequence, order_id, event_type, status, status_reason)
    VALUES (p_customer_id, v_balance.next_event_sequence, p_order_id,
            CASE v_status WHEN 'PLACED' THEN 'placed' ELSE 'rejected' END, v_status, v_reason);

    IF v_status = 'PLACED' THEN
        INSERT INTO ledger_entries (customer_id, asset, kind, available_delta, reserved_delta, order_id)
        VALUES (p_customer_id,
                CASE p_side WHEN 'BUY' THEN 'USD' ELSE p_symbol END,
                'reserve',
                -(CASE p_side WHEN 'BUY' THEN p_reserve_cash ELSE p_quantity END),
                CASE p_side WHEN 'BUY' THEN p_reserve_cash ELSE p_quantity END,
                p_order_id);
        -- Rule 4: the message commits with the order; the relay publishes it.
        INSERT INTO outbox (dedupe_id, subject, payload) VALUES (p_order_id, p_subject, p_payload);
    END IF;
    RETURN v_order;
END;
$$;

-- Group commit: several placements in one transaction, one round trip and one WAL flush, in the order given.
-- Callers sort a batch by customer, so concurrent batches lock customers in one order and cannot deadlock.
-- Returns one row per order, in order; a row of nulls for an unknown customer.
CREATE FUNCTION place_orders(
    p_order_ids text[],
    p_customer_ids text[],
    p_client_order_ids text[],
    p_symbols text[],
    p_sides text[],
    p_quantities bigint[],
    p_protection_prices numeric[],
    p_reserve_cash numeric[],
    p_reject_reasons text[],
    p_subjects text[],
    p_payloads bytea[]
) RETURNS SETOF orders
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_order orders;
BEGIN
    FOR i IN 1 .. cardinality(p_order_ids) LOOP
        v_order := place_order(p_order_ids[i], p_customer_ids[i], p_client_order_ids[i], p_symbols[i], p_sides[i],
                               p_quantities[i], p_protection_prices[i], p_reserve_cash[i], p_reject_reasons[i],
                               p_subjects[i], p_payloads[i]);
        RETURN NEXT v_order;
    END LOOP;
END;
$$;

-- Cancels an order no worker has claimed (rule 6) and releases what it holds. Returns the order as it now
-- stands (canceled, or untouched when it could not be), or nothing when the customer has no such order.
CREATE FUNCTION cancel_placed_order(p_customer_id text, p_order_id text) RETURNS SETOF orders
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_event_sequence bigint;
    v_order          orders;
BEGIN
    SELECT next_event_sequence INTO v_event_sequence FROM balances WHERE customer_id = p_customer_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    UPDATE orders SET status = 'CANCELED', status_reason = 'canceled by the customer',
                      reserved_cash = 0, reserved_shares = 0, updated_at = now()
     WHERE order_id = p_order_id AND customer_id = p_customer_id AND status = 'PLACED' AND claimed_at IS NULL
    RETURNING * INTO v_order;
    IF NOT FOUND THEN
        RETURN QUERY SELECT * FROM orders WHERE order_id = p_order_id AND customer_id = p_customer_id;
        RETURN;
    END IF;

    PERFORM release_reservation(p_order_id);
    INSERT INTO order_events (customer_id, sequence, order_id, event_type, status, status_reason)
    VALUES (p_customer_id, v_event_sequence, p_order_id, 'canceled', 'CANCELED', v_order.status_reason);
    UPDATE balances SET next_event_sequence = next_event_sequence + 1, updated_at = now()
     WHERE customer_id = p_customer_id;
    RETURN NEXT v_order;
END;
$$;

-- Gives back what an order still holds, by its reserve and release ledger entries, so a reservation is
-- released once whatever path the order took. The caller holds the customer's balances row lock.
CREATE FUNCTION release_reservation(p_order_id text) RETURNS void
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_held record;
BEGIN
    FOR v_held IN
        SELECT customer_id, asset, sum(reserved_delta) AS amount
          FROM ledger_entries WHERE order_id = p_order_id
         GROUP BY customer_id, asset HAVING sum(reserved_delta) > 0
    LOOP
        IF v_held.asset = 'USD' THEN
            UPDATE balances SET available = available + v_held.amount, reserved = reserved - v_held.amount,
                                updated_at = now()
             WHERE customer_id = v_held.customer_id;
        ELSE
            UPDATE positions SET reserved = reserved - v_held.amount, updated_at = now()
             WHERE customer_id = v_held.customer_id AND symbol = v_held.asset;
        END IF;
        INSERT INTO ledger_entries (customer_id, asset, kind, available_delta, reserved_delta, order_id)
        VALUES (v_held.customer_id, v_held.asset, 'release', v_held.amount, -v_held.amount, p_order_id);
    END LOOP;
END;
$$;
