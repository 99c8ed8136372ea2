-- The risk controls as reviewed before their release (0019 to 0022):
--
-- - The claim must not wait for a customer's lock while it holds rows of its orders (every other transaction takes the
--   customer's balances row first): a customer with halted orders is locked with SKIP LOCKED, and one busy elsewhere
--   keeps them, with what follows them, for the next claim.
-- - An order under a halt that may have left already (claimed before, or an earlier send's outcome unknown) is not
--   held for the clear, whose collar would be stale: it gets a cancel request, which the venue answers (rule 9: one it
--   never received ends by its tombstone). The reason it ends with is kept on the order (cancel_reason).
-- - A halt cancel job's orders are taken across its shard's jobs in one lock order (by customer).
-- - Orders claimed before 0019 counted no claims: any of them may have been sent.
-- - The limits have one home (limits_in_force), and placement fails closed without the firm's defaults.
-- - A buy writes its customer's row once, as before 0019 (which wrote it twice).
-- - Which orders a halt covers has one home (halt_covers).
-- - halt_in_force and limits_in_force, called for every order, keep their plans (PL/pgSQL, as 0015's helpers).

ALTER TABLE orders ADD COLUMN cancel_reason text;  -- why a cancel was asked, when not by the customer

UPDATE orders SET claims = 2 WHERE status = 'PLACED' AND claimed_at IS NOT NULL AND claims = 0;

CREATE FUNCTION halt_covers(p_halt trading_halts, p_customer_id text, p_symbol text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_halt.scope = 'FIRM' OR (p_halt.scope = 'SYMBOL' AND p_halt.symbol = p_symbol)
           OR (p_halt.scope = 'CUSTOMER' AND p_halt.customer_id = p_customer_id)
$$;

-- The two helpers placement calls for every order, in PL/pgSQL (as 0015's): a SQL function that is not inlined is
-- planned again at every call.
CREATE OR REPLACE FUNCTION halt_in_force(p_customer_id text, p_symbol text) RETURNS trading_halts
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_halt trading_halts;
BEGIN
    SELECT h.* INTO v_halt FROM trading_halts h
     WHERE h.cleared_at IS NULL AND halt_covers(h, p_customer_id, p_symbol)
     ORDER BY CASE h.scope WHEN 'FIRM' THEN 1 WHEN 'SYMBOL' THEN 2 ELSE 3 END
     LIMIT 1;
    RETURN v_halt;
END;
$$;

CREATE OR REPLACE FUNCTION limits_in_force(p_customer_id text) RETURNS risk_limits
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_limits risk_limits;
BEGIN
    SELECT p_customer_id,
           coalesce(c.max_order_notional, f.max_order_notional),
           coalesce(c.max_order_quantity, f.max_order_quantity),
           coalesce(c.max_daily_buy_notional, f.max_daily_buy_notional),
           coalesce(c.max_orders_per_minute, f.max_orders_per_minute),
           greatest(c.updated_at, f.updated_at)
      INTO v_limits
      FROM risk_limits f LEFT JOIN risk_limits c ON c.customer_id = p_customer_id AND p_customer_id <> ''
     WHERE f.customer_id = '';
    RETURN v_limits;
END;
$$;

-- Asks the venue to cancel an order a halt caught that may have left, as a customer's cancel would be asked (the
-- sweeper publishes what is not sent at once); the caller holds the customer's lock.
CREATE FUNCTION request_halt_cancel(p_order orders) RETURNS orders
LANGUAGE plpgsql AS $$
DECLARE
    v_order orders;
BEGIN
    UPDATE orders SET cancel_requested_at = now(), cancel_reason = 'canceled: trading halted', updated_at = now()
     WHERE order_id = p_order.order_id
    RETURNING * INTO v_order;
    PERFORM append_order_event(v_order, 'cancel_requested');
    RETURN v_order;
END;
$$;

-- What a halt does to a waiting order: one no send of which can have left (claimed at most p_own_claims times, the
-- caller's own claims, and no unknown outcome) ends here (end_halted_unsent: 'rejected', or 'canceled'); any other is
-- asked of the venue ('cancel_requested'). The caller holds the customer's lock.
CREATE FUNCTION stop_halted(p_order orders, p_halt trading_halts, p_own_claims integer) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    IF p_order.claims <= p_own_claims AND p_order.unknown_outcomes = 0 THEN
        RETURN lower((end_halted_unsent(p_order, p_halt)).status);
    END IF;
    PERFORM request_halt_cancel(p_order);
    RETURN 'cancel_requested';
END;
$$;

-- A halt stops orders that have not left (15c3-5 checks before an order leaves), and never holds them for its clear:
-- the customer's waiting orders through p_through under a halt in force are stopped (stop_halted) before the claim
-- takes any. The claim holds rows of the customer's orders, so it must not wait for the customer's lock (taken first
-- everywhere else): a customer busy elsewhere keeps its halted orders, and what follows them, for the next claim.
-- Returns the sequence the claim may take the customer's orders through.
CREATE OR REPLACE FUNCTION reject_halted_waiting(p_customer_id text, p_through bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_first orders;
    v_order orders;
    v_halt  trading_halts;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM trading_halts WHERE cleared_at IS NULL) THEN
        RETURN p_through;
    END IF;
    SELECT * INTO v_first FROM orders o
     WHERE o.customer_id = p_customer_id AND o.status = 'PLACED' AND o.held_by IS NULL AND o.sequence <= p_through
       AND o.cancel_requested_at IS NULL AND (halt_in_force(p_customer_id, o.symbol)).halt_id IS NOT NULL
     ORDER BY o.sequence
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN p_through;
    END IF;
    IF NOT lock_customer_unless_busy(p_customer_id) THEN
        RETURN v_first.sequence - 1;
    END IF;
    FOR v_order IN
        SELECT * FROM orders
         WHERE customer_id = p_customer_id AND status = 'PLACED' AND held_by IS NULL AND sequence <= p_through
           AND sequence >= v_first.sequence AND cancel_requested_at IS NULL
         ORDER BY sequence
           FOR UPDATE
    LOOP
        v_halt := halt_in_force(p_customer_id, v_order.symbol);
        CONTINUE WHEN v_halt.halt_id IS NULL;
        PERFORM stop_halted(v_order, v_halt, 0);
    END LOOP;
    RETURN p_through;
END;
$$;

-- The worker's check just before it sends claimed orders: each under a halt in force is kept from the venue and
-- stopped (stop_halted, the worker's own claim its only one: 'rejected', 'canceled' or 'cancel_requested'). Returns
-- those it kept back; the worker sends the rest, and takes each cancel request to the venue at once.
CREATE OR REPLACE FUNCTION withhold_halted_claims(p_order_ids text[])
RETURNS TABLE (order_id text, outcome text)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_order orders;
    v_halt  trading_halts;
BEGIN
    FOR v_order IN SELECT * FROM orders o WHERE o.order_id = ANY(p_order_ids) ORDER BY o.customer_id, o.sequence LOOP
        v_halt := halt_in_force(v_order.customer_id, v_order.symbol);
        CONTINUE WHEN v_halt.halt_id IS NULL OR v_order.status <> 'PLACED';
        PERFORM 1 FROM balances b WHERE b.customer_id = v_order.customer_id FOR UPDATE;
        SELECT * INTO v_order FROM orders o WHERE o.order_id = v_order.order_id FOR UPDATE;
        CONTINUE WHEN v_order.status <> 'PLACED' OR v_order.cancel_requested_at IS NOT NULL;
        RETURN QUERY SELECT v_order.order_id, stop_halted(v_order, v_halt, 1);
    END LOOP;
END;
$$;

-- Works the unfinished halt cancel jobs of these shards: their orders open when each halt was set, at most p_limit,
-- taken across the jobs in one lock order (by customer), each under its customer's lock: one no worker took canceled
-- at once, any other asked of the venue (the caller publishes the requests; the sweeper re-drives any whose message is
-- lost). Returns them; a job with nothing left in scope finishes.
CREATE OR REPLACE FUNCTION cancel_for_halts(p_shards integer[], p_limit integer)
RETURNS TABLE (order_id text, customer_id text, shard integer, outcome text)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_jobs   bigint[];
    v_shards integer[];
    v_next   record;
    v_order  orders;
BEGIN
    SELECT array_agg(mine.halt_id), array_agg(mine.shard) INTO v_jobs, v_shards FROM (
        SELECT j.halt_id, j.shard FROM halt_cancel_jobs j
         WHERE j.shard = ANY(p_shards) AND j.finished_at IS NULL
           FOR UPDATE SKIP LOCKED
    ) AS mine;
    IF v_jobs IS NULL THEN
        RETURN;
    END IF;
    FOR v_next IN
        SELECT DISTINCT ON (o.customer_id, o.sequence) o.order_id, o.customer_id, o.sequence, j.halt_id, j.shard
          FROM unnest(v_jobs, v_shards) AS j (halt_id, shard)
          JOIN trading_halts h ON h.halt_id = j.halt_id
          JOIN orders o ON o.shard = j.shard
         WHERE o.status IN ('PLACED', 'SUBMITTED', 'PARTIALLY_FILLED') AND o.cancel_requested_at IS NULL
           AND o.created_at <= h.set_at AND halt_covers(h, o.customer_id, o.symbol)
         ORDER BY o.customer_id, o.sequence
         LIMIT p_limit
    LOOP
        PERFORM 1 FROM balances b WHERE b.customer_id = v_next.customer_id FOR UPDATE;
        SELECT * INTO v_order FROM orders o WHERE o.order_id = v_next.order_id FOR UPDATE;
        CONTINUE WHEN v_order.status NOT IN ('PLACED', 'SUBMITTED', 'PARTIALLY_FILLED')
                      OR v_order.cancel_requested_at IS NOT NULL;
        IF v_order.status = 'PLACED' AND v_order.claimed_at IS NULL THEN
            v_order := cancel_unsent(v_order, 'canceled: trading halted');
            UPDATE halt_cancel_jobs j SET canceled = j.canceled + 1
             WHERE j.halt_id = v_next.halt_id AND j.shard = v_next.shard;
            RETURN QUERY SELECT v_order.order_id, v_order.customer_id, v_order.shard, 'canceled';
        ELSE
            v_order := request_halt_cancel(v_order);
            UPDATE halt_cancel_jobs j SET requested = j.requested + 1
             WHERE j.halt_id = v_next.halt_id AND j.shard = v_next.shard;
            RETURN QUERY SELECT v_order.order_id, v_order.customer_id, v_order.shard, 'requested';
        END IF;
    END LOOP;
    UPDATE halt_cancel_jobs j SET finished_at = now()
      FROM unnest(v_jobs, v_shards) AS mine (halt_id, shard)
     WHERE j.halt_id = mine.halt_id AND j.shard = mine.shard
       AND NOT EXISTS (
           SELECT 1 FROM orders o JOIN trading_halts h ON h.halt_id = j.halt_id
            WHERE o.shard = j.shard AND o.status IN ('PLACED', 'SUBMITTED', 'PARTIALLY_FILLED')
              AND o.cancel_requested_at IS NULL AND o.created_at <= h.set_at
              AND halt_covers(h, o.customer_id, o.symbol));
END;
$$;

-- Placement reads the limits in force through limits_in_force, and fails closed without the firm's defaults; a buy's
-- reserving update takes the sequences and the rate limit's time too, so the customer's row is written once, not twice.
CREATE OR REPLACE FUNCTION place_order_v3(
    p_order_id text,
    p_customer_id text,
    p_client_order_id text,
    p_symbol text,
    p_side text,
    p_quantity bigint,
    p_protection_price numeric,
    p_reference_price numeric,
    p_reject_code text,    -- the desk's refusal (market closed, no or stale quote); null: none
    p_reject_reason text,
    p_subject text,
    p_payload bytea,
    p_expires_at timestamptz,
    OUT o_order orders,
    OUT o_retry_after interval
)
LANGUAGE plpgsql AS $$
DECLARE
    v_balance  balances;
    v_halt     trading_halts;
    v_limits   risk_limits;
    v_day      date := (now() AT TIME ZONE 'America/New_York')::date;
    v_bought   numeric;
    v_notional numeric;
    v_interval interval;
    v_tat      timestamptz;
    v_code     text;
    v_reason   text := '';
    v_held     bigint;
    v_cash     numeric := 0;
    v_counted  boolean := false;  -- the customer's sequences and rate limit already taken by the reserving update
BEGIN
    -- Rule 3: the row lock orders the customer's placements; the sequence and the risk state are taken under it.
    SELECT * INTO v_balance FROM balances WHERE customer_id = p_customer_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    -- Rule 2: a retry (also one that waited on the lock above) returns the first order, and is never rate limited.
    SELECT * INTO o_order FROM orders WHERE customer_id = p_customer_id AND client_order_id = p_client_order_id;
    IF FOUND THEN
        RETURN;
    END IF;

    v_limits := limits_in_force(p_customer_id);
    IF v_limits.max_orders_per_minute IS NULL THEN  -- fail closed: no order passes unchecked
        RAISE EXCEPTION 'the firm''s default limits are missing (the risk_limits row of customer_id '''')';
    END IF;

    -- The rate limit (GCRA on the database's clock, the same for every replica): a burst of the minute's allowance,
    -- then one order each 60/limit seconds. Orders of one batch share now(), so they count each other.
    v_interval := interval '60 seconds' / v_limits.max_orders_per_minute;
    v_tat := greatest(coalesce(v_balance.rate_tat, now()), now());
    IF v_tat - now() > interval '60 seconds' - v_interval THEN
        o_retry_after := v_tat - now() - (interval '60 seconds' - v_interval);
        RETURN;
    END IF;

    v_bought := CASE WHEN v_balance.buy_notional_day = v_day THEN v_balance.buy_notional ELSE 0 END;
    v_notional := p_quantity * CASE p_side WHEN 'BUY' THEN p_protection_price ELSE p_reference_price END;
    v_halt := halt_in_force(p_customer_id, p_symbol);
    IF v_halt.halt_id IS NOT NULL THEN
        v_code := 'TRADING_HALTED';
        v_reason := halt_notice(v_halt);
    ELSIF v_balance.account_status = 'BLOCKED' THEN
        v_code := 'ACCOUNT_BLOCKED';
        v_reason := 'the account is blocked';
    ELSIF v_balance.account_status = 'CLOSING_ONLY' AND p_side = 'BUY' THEN
        v_code := 'ACCOUNT_CLOSING_ONLY';
        v_reason := 'the account may only sell';
    ELSIF p_quantity > v_limits.max_order_quantity THEN
        v_code := 'QUANTITY_LIMIT';
        v_reason := format('quantity %s is above the limit of %s shares an order', p_quantity,
                           v_limits.max_order_quantity);
    ELSIF p_reject_code IS NOT NULL THEN
        v_code := p_reject_code;
        v_reason := p_reject_reason;
    ELSIF v_notional > v_limits.max_order_notional THEN
        v_code := 'NOTIONAL_LIMIT';
        v_reason := format('order notional %s is above the limit of %s', format_money(v_notional),
                           format_money(v_limits.max_order_notional));
    ELSIF p_side = 'BUY' AND v_bought + v_notional > v_limits.max_daily_buy_notional THEN
        v_code := 'DAILY_NOTIONAL_LIMIT';
        v_reason := format('buys today would come to %s, above the daily limit of %s',
                           format_money(v_bought + v_notional), format_money(v_limits.max_daily_buy_notional));
    ELSIF p_side = 'BUY' THEN
        -- Rule 1: reserve with a guarded update; no row updated means not enough.
        v_cash := p_quantity * p_protection_price;
        UPDATE balances SET available = available - v_cash, reserved = reserved + v_cash,
                            buy_notional_day = v_day, buy_notional = v_bought + v_notional,
                            next_order_sequence = next_order_sequence + 1,
                            next_event_sequence = next_event_sequence + 1,
                            rate_tat = v_tat + v_interval, updated_at = now()
         WHERE customer_id = p_customer_id AND available >= v_cash;
        v_counted := FOUND;
        IF NOT FOUND THEN
            v_code := 'INSUFFICIENT_BUYING_POWER';
            v_reason := format('insufficient buying power: requires %s, available %s',
                               format_money(v_cash), format_money(v_balance.available));
        END IF;
    ELSE
        UPDATE positions SET reserved = reserved + p_quantity, updated_at = now()
         WHERE customer_id = p_customer_id AND symbol = p_symbol AND quantity - reserved >= p_quantity;
        IF NOT FOUND THEN
            SELECT quantity - reserved INTO v_held FROM positions
             WHERE customer_id = p_customer_id AND symbol = p_symbol;
            v_code := 'INSUFFICIENT_SHARES';
            v_reason := format('insufficient shares: requires %s, available %s', p_quantity, coalesce(v_held, 0));
        END IF;
    END IF;

    INSERT INTO orders (order_id, client_order_id, customer_id, sequence, symbol, side, quantity,
                        protection_price, reserved_cash, reserved_shares, status, status_reason, reject_code,
                        expires_at)
    VALUES (p_order_id, p_client_order_id, p_customer_id, v_balance.next_order_sequence, p_symbol, p_side,
            p_quantity, p_protection_price,
            CASE WHEN v_code IS NULL THEN v_cash ELSE 0 END,
            CASE WHEN v_code IS NULL AND p_side = 'SELL' THEN p_quantity ELSE 0 END,
            CASE WHEN v_code IS NULL THEN 'PLACED' ELSE 'REJECTED' END, v_reason, v_code, p_expires_at)
    ON CONFLICT DO NOTHING
    RETURNING * INTO o_order;
    IF NOT FOUND THEN
        -- Unreachable while the lock above is held; refuse rather than reserve twice.
        RAISE EXCEPTION 'order % conflicts with an existing order', p_order_id USING ERRCODE = 'unique_violation';
    END IF;

    IF NOT v_counted THEN  -- the reserving update of a buy took them already: one write of the row, not two
        UPDATE balances SET next_order_sequence = next_order_sequence + 1,
                            next_event_sequence = next_event_sequence + 1,
                            rate_tat = v_tat + v_interval,
                            updated_at = now()
         WHERE customer_id = p_customer_id;
    END IF;

    INSERT INTO order_events (customer_id, sequence, order_id, event_type, status, status_reason)
    VALUES (p_customer_id, v_balance.next_event_sequence, p_order_id,
            CASE WHEN v_code IS NULL THEN 'placed' ELSE 'rejected' END, o_order.status, v_reason);

    IF v_code IS NULL THEN
        INSERT INTO transfers (transfer_key, kind, asset, customer_id, debit_account, credit_account, amount,
                               order_id)
        VALUES (p_order_id || ':reserve', 'reserve', CASE p_side WHEN 'BUY' THEN 'USD' ELSE p_symbol END,
                p_customer_id, 'available', 'reserved', greatest(v_cash, o_order.reserved_shares), p_order_id);
        -- Rule 4: the message commits with the order; the relay publishes it.
        INSERT INTO outbox (dedupe_id, subject, payload) VALUES (p_order_id, p_subject, p_payload);
    END IF;
END;
$$;

ALTER FUNCTION withhold_halted_claims(text[]) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION cancel_for_halts(integer[], integer) SECURITY DEFINER SET search_path = public, pg_temp;
