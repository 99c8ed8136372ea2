-- Market-access risk controls (issue 19, DESIGN.md "Risk controls", SEC Rule 15c3-5): halts (the firm's kill switch,
-- the restricted list of symbols, a customer's), account status, per-order and daily credit limits and a per-customer
-- rate limit, checked in the placement transaction under the customer's lock, in DESIGN.md's order; every refusal is a
-- stored REJECTED order with a machine-readable reject_code. Halts, statuses and limits change only through the
-- operations service's functions below, each writing its audit row (risk_events, append-only) in the same
-- transaction.
--
-- Expand only, for a rolling update: place_order_v2 (the previous release's OrderService) now places through
-- place_order_v3 and so meets the same checks; instruments.tradable is no longer read (a symbol not tradable became
-- a symbol halt here) and a later migration drops it.

-- ------------------------------------------------------------------------------------------------ reject codes

-- Why an order was rejected, as data (the proto's RejectCode without its prefix; brokerage.domain.risk.RejectCode,
-- held together by a test). Set exactly when the order is REJECTED; the venue's rejections, reported or answered to a
-- send, are the only ones that name no code of their own (orders_name_reject_code gives them theirs).
ALTER TABLE orders ADD COLUMN reject_code text CHECK (reject_code IN (
    'TRADING_HALTED', 'ACCOUNT_BLOCKED', 'ACCOUNT_CLOSING_ONLY', 'QUANTITY_LIMIT', 'MARKET_CLOSED', 'NO_QUOTE',
    'STALE_QUOTE', 'NOTIONAL_LIMIT', 'DAILY_NOTIONAL_LIMIT', 'INSUFFICIENT_BUYING_POWER', 'INSUFFICIENT_SHARES',
    'EXCHANGE_REJECTED'));

-- The code a reason written before codes existed stands for (the rows this migration finds; the previous release's
-- placements, whose desk still passes a reason).
CREATE FUNCTION reject_code_for_reason(p_reason text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_reason IS NULL THEN NULL
        WHEN p_reason LIKE 'market closed%' THEN 'MARKET_CLOSED'
        WHEN p_reason LIKE 'trading in % is halted' THEN 'TRADING_HALTED'
        WHEN p_reason LIKE 'no reference price%' THEN 'NO_QUOTE'
        WHEN p_reason LIKE 'reference price for % is stale%' THEN 'STALE_QUOTE'
        WHEN p_reason LIKE 'insufficient buying power%' THEN 'INSUFFICIENT_BUYING_POWER'
        WHEN p_reason LIKE 'insufficient shares%' THEN 'INSUFFICIENT_SHARES'
        ELSE 'EXCHANGE_REJECTED'
    END
$$;

UPDATE orders SET reject_code = reject_code_for_reason(status_reason) WHERE status = 'REJECTED';
ALTER TABLE orders ADD CONSTRAINT orders_rejected_have_a_code CHECK ((status = 'REJECTED') = (reject_code IS NOT NULL));

CREATE FUNCTION orders_name_reject_code() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.reject_code := 'EXCHANGE_REJECTED';
    RETURN NEW;
END;
$$;
CREATE TRIGGER orders_name_reject_code BEFORE UPDATE OF status ON orders
    FOR EACH ROW WHEN (NEW.status = 'REJECTED' AND NEW.reject_code IS NULL) EXECUTE FUNCTION orders_name_reject_code();

-- --------------------------------------------------------------------------------------- customers' risk state

-- On the customer's row, read and changed under its lock: the account's status, the day's gross accepted buy
-- notional at the protection price (the credit threshold's measure, per America/New_York trading day) and the rate
-- limit's state, a GCRA theoretical arrival time (one timestamp: the orders per minute allowed in a burst, then one
-- each 60/limit seconds).
ALTER TABLE balances
    ADD COLUMN account_status text NOT NULL DEFAULT 'ACTIVE'
        CHECK (account_status IN ('ACTIVE', 'CLOSING_ONLY', 'BLOCKED')),
    ADD COLUMN buy_notional_day date,
    ADD COLUMN buy_notional numeric(20,4) NOT NULL DEFAULT 0 CHECK (buy_notional >= 0),
    ADD COLUMN rate_tat timestamptz;

-- Limits: the firm's defaults (the row '', every limit set) and a customer's own, where set (null: the firm's).
CREATE TABLE risk_limits (
    customer_id            text PRIMARY KEY,  -- '' : the firm's defaults
    max_order_notional     numeric(20,4) CHECK (max_order_notional > 0),
    max_order_quantity     bigint CHECK (max_order_quantity > 0),
    max_daily_buy_notional numeric(20,4) CHECK (max_daily_buy_notional > 0),
    max_orders_per_minute  integer CHECK (max_orders_per_minute > 0),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CHECK (customer_id <> '' OR (max_order_notional IS NOT NULL AND max_order_quantity IS NOT NULL
                                 AND max_daily_buy_notional IS NOT NULL AND max_orders_per_minute IS NOT NULL))
);
INSERT INTO risk_limits (customer_id, max_order_notional, max_order_quantity, max_daily_buy_notional,
                         max_orders_per_minute)
VALUES ('', 1000000, 100000, 10000000, 600);

-- ------------------------------------------------------------------------------------------------------- halts

-- A halt stops new orders of its scope (never cancels): the whole firm (the kill switch), a symbol (the restricted
-- list) or a customer. One in force per target; cleared, it stays as history.
CREATE TABLE trading_halts (
    halt_id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope              text NOT NULL CHECK (scope IN ('FIRM', 'SYMBOL', 'CUSTOMER')),
    symbol             text REFERENCES instruments,
    customer_id        text REFERENCES balances,
    reason             text NOT NULL CHECK (reason <> ''),  -- the operator's: never shown to a customer
    cancel_open_orders boolean NOT NULL DEFAULT false,
    set_at             timestamptz NOT NULL DEFAULT now(),
    set_by             text NOT NULL,
    cleared_at         timestamptz,
    cleared_by         text,
    CHECK ((scope = 'FIRM' AND symbol IS NULL AND customer_id IS NULL)
           OR (scope = 'SYMBOL' AND symbol IS NOT NULL AND customer_id IS NULL)
           OR (scope = 'CUSTOMER' AND customer_id IS NOT NULL AND symbol IS NULL)),
    CHECK ((cleared_at IS NULL) = (cleared_by IS NULL))
);
CREATE UNIQUE INDEX trading_halts_one_in_force ON trading_halts (scope, coalesce(symbol, ''), coalesce(customer_id, ''))
 WHERE cleared_at IS NULL;

INSERT INTO trading_halts (scope, symbol, reason, set_by)
SELECT 'SYMBOL', symbol, 'not tradable before halts existed', 'migration 0019' FROM instruments WHERE NOT tradable;
UPDATE instruments SET tradable = true WHERE NOT tradable;

-- The halt in force over an order of this customer in this symbol, the widest first; null if none.
CREATE FUNCTION halt_in_force(p_customer_id text, p_symbol text) RETURNS trading_halts
LANGUAGE sql STABLE AS $$
    SELECT * FROM trading_halts
     WHERE cleared_at IS NULL
       AND (scope = 'FIRM' OR (scope = 'SYMBOL' AND symbol = p_symbol) OR (scope = 'CUSTOMER' AND customer_id = p_customer_id))
     ORDER BY CASE scope WHEN 'FIRM' THEN 1 WHEN 'SYMBOL' THEN 2 ELSE 3 END
     LIMIT 1
$$;

-- What a customer is told of a halt (the operator's reason stays in the audit).
CREATE FUNCTION halt_notice(p_halt trading_halts) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_halt.scope WHEN 'FIRM' THEN 'trading is halted'
                             WHEN 'SYMBOL' THEN format('trading in %s is halted', p_halt.symbol)
                             ELSE 'trading is halted for this account' END
$$;

-- --------------------------------------------------------------------------------------------------- the audit

-- Every change of a halt, a status or a limit, written in the changing transaction: who (the operator's token issuer
-- and subject, the peer's certificate identity or address), what (before and after) and why. Append-only.
CREATE TABLE risk_events (
    event_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at     timestamptz NOT NULL DEFAULT now(),
    action          text NOT NULL CHECK (action IN ('halt_set', 'halt_cleared', 'account_status_set', 'limits_set')),
    customer_id     text,
    symbol          text,
    halt_id         bigint REFERENCES trading_halts,
    detail          jsonb NOT NULL,
    reason          text NOT NULL,
    operator_issuer text NOT NULL,
    operator        text NOT NULL,
    operator_peer   text NOT NULL
);

CREATE FUNCTION risk_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'risk_events is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER risk_events_append_only BEFORE UPDATE OR DELETE ON risk_events
    FOR EACH ROW EXECUTE FUNCTION risk_events_append_only();
CREATE TRIGGER risk_events_no_truncate BEFORE TRUNCATE ON risk_events
    FOR EACH STATEMENT EXECUTE FUNCTION risk_events_append_only();

-- ------------------------------------------------------------------------------------------------------ placement

-- Placement (rules 1 to 3) with the pre-trade checks, in DESIGN.md's order: the halts (firm, symbol, customer), the
-- account status, the quantity limit, then what the desk decided before the transaction (market hours, a fresh quote:
-- p_reject_code and its reason), the notional limit (the protection price for a buy, the reference price for a sell),
-- the day's buy notional, then cash or shares. Each refusal is a stored REJECTED order with its code. Before any of
-- them, after the client_order_id lookup (a retry returns the first order), the customer's rate limit: past it,
-- nothing is stored and o_retry_after says when to retry. o_order is null for an unknown customer.
CREATE FUNCTION place_order_v3(
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

    SELECT f.customer_id,
           coalesce(c.max_order_notional, f.max_order_notional),
           coalesce(c.max_order_quantity, f.max_order_quantity),
           coalesce(c.max_daily_buy_notional, f.max_daily_buy_notional),
           coalesce(c.max_orders_per_minute, f.max_orders_per_minute)
      INTO v_limits.customer_id, v_limits.max_order_notional, v_limits.max_order_quantity,
           v_limits.max_daily_buy_notional, v_limits.max_orders_per_minute
      FROM risk_limits f LEFT JOIN risk_limits c ON c.customer_id = p_customer_id
     WHERE f.customer_id = '';

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
                            buy_notional_day = v_day, buy_notional = v_bought + v_notional
         WHERE customer_id = p_customer_id AND available >= v_cash;
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

    UPDATE balances SET next_order_sequence = next_order_sequence + 1,
                        next_event_sequence = next_event_sequence + 1,
                        rate_tat = v_tat + v_interval,
                        updated_at = now()
     WHERE customer_id = p_customer_id;

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

-- Group commit of placements: one row per order, in the order given; a row of nulls for an unknown customer, and
-- only o_retry_after for one past its rate limit.
CREATE FUNCTION place_orders_v3(
    p_order_ids text[],
    p_customer_ids text[],
    p_client_order_ids text[],
    p_symbols text[],
    p_sides text[],
    p_quantities bigint[],
    p_protection_prices numeric[],
    p_reference_prices numeric[],
    p_reject_codes text[],
    p_reject_reasons text[],
    p_subjects text[],
    p_payloads bytea[],
    p_expires_ats timestamptz[]
) RETURNS TABLE (placed orders, retry_after interval)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
BEGIN
    FOR i IN 1 .. cardinality(p_order_ids) LOOP
        RETURN QUERY SELECT * FROM place_order_v3(
            p_order_ids[i], p_customer_ids[i], p_client_order_ids[i], p_symbols[i], p_sides[i], p_quantities[i],
            p_protection_prices[i], p_reference_prices[i], p_reject_codes[i], p_reject_reasons[i], p_subjects[i],
            p_payloads[i], p_expires_ats[i]);
    END LOOP;
END;
$$;

-- The previous release's placement, through the checks above: its reason names the code; a sell's notional is taken
-- at its protection price (it passes no reference price); past the rate limit it is refused as a transient error
-- (class 53), which its caller answers UNAVAILABLE and retries.
CREATE OR REPLACE FUNCTION place_order_v2(
    p_order_id text,
    p_customer_id text,
    p_client_order_id text,
    p_symbol text,
    p_side text,
    p_quantity bigint,
    p_protection_price numeric,
    p_reject_reason text,
    p_subject text,
    p_payload bytea,
    p_expires_at timestamptz
) RETURNS orders
LANGUAGE plpgsql AS $$
DECLARE
    v_placed record;
BEGIN
    SELECT * INTO v_placed FROM place_order_v3(
        p_order_id, p_customer_id, p_client_order_id, p_symbol, p_side, p_quantity, p_protection_price,
        p_protection_price, reject_code_for_reason(p_reject_reason), p_reject_reason, p_subject, p_payload,
        p_expires_at);
    IF v_placed.o_retry_after IS NOT NULL THEN
        RAISE EXCEPTION 'customer % is past its rate limit', p_customer_id USING ERRCODE = 'configuration_limit_exceeded';
    END IF;
    RETURN v_placed.o_order;
END;
$$;

-- -------------------------------------------------------------------------------------------- the risk desk's levers

-- Sets a halt, with its audit row; one already in force over the same target is returned instead (o_set false);
-- null for an unknown symbol or customer.
CREATE FUNCTION set_trading_halt(p_scope text, p_symbol text, p_customer_id text, p_reason text,
                                 p_cancel_open_orders boolean, p_issuer text, p_operator text, p_peer text,
                                 OUT o_halt trading_halts, OUT o_set boolean)
LANGUAGE plpgsql AS $$
BEGIN
    o_set := false;
    IF (p_scope = 'SYMBOL' AND NOT EXISTS (SELECT 1 FROM instruments WHERE symbol = p_symbol))
       OR (p_scope = 'CUSTOMER' AND NOT EXISTS (SELECT 1 FROM balances WHERE customer_id = p_customer_id)) THEN
        RETURN;  -- no such symbol or customer
    END IF;
    INSERT INTO trading_halts (scope, symbol, customer_id, reason, cancel_open_orders, set_by)
    VALUES (p_scope, p_symbol, p_customer_id, p_reason, p_cancel_open_orders, p_operator)
    ON CONFLICT (scope, coalesce(symbol, ''), coalesce(customer_id, '')) WHERE cleared_at IS NULL DO NOTHING
    RETURNING * INTO o_halt;
    IF FOUND THEN
        o_set := true;
        INSERT INTO risk_events (action, customer_id, symbol, halt_id, detail, reason, operator_issuer, operator,
                                 operator_peer)
        VALUES ('halt_set', p_customer_id, p_symbol, o_halt.halt_id,
                jsonb_build_object('scope', p_scope, 'cancel_open_orders', p_cancel_open_orders), p_reason, p_issuer,
                p_operator, p_peer);
        RETURN;
    END IF;
    SELECT * INTO o_halt FROM trading_halts
     WHERE cleared_at IS NULL AND scope = p_scope AND symbol IS NOT DISTINCT FROM p_symbol
       AND customer_id IS NOT DISTINCT FROM p_customer_id;
END;
$$;

-- Clears a halt in force, with its audit row; one already cleared is returned as it stands; null if unknown.
CREATE FUNCTION clear_trading_halt(p_halt_id bigint, p_reason text, p_issuer text, p_operator text, p_peer text)
RETURNS trading_halts
LANGUAGE plpgsql AS $$
DECLARE
    v_halt trading_halts;
BEGIN
    UPDATE trading_halts SET cleared_at = now(), cleared_by = p_operator
     WHERE halt_id = p_halt_id AND cleared_at IS NULL
    RETURNING * INTO v_halt;
    IF NOT FOUND THEN
        SELECT * INTO v_halt FROM trading_halts WHERE halt_id = p_halt_id;
        RETURN v_halt;
    END IF;
    INSERT INTO risk_events (action, customer_id, symbol, halt_id, detail, reason, operator_issuer, operator,
                             operator_peer)
    VALUES ('halt_cleared', v_halt.customer_id, v_halt.symbol, v_halt.halt_id,
            jsonb_build_object('scope', v_halt.scope), p_reason, p_issuer, p_operator, p_peer);
    RETURN v_halt;
END;
$$;

-- Sets a customer's account status under its lock, with its audit row; null for an unknown customer.
CREATE FUNCTION set_account_status(p_customer_id text, p_status text, p_reason text, p_issuer text, p_operator text,
                                   p_peer text)
RETURNS balances
LANGUAGE plpgsql AS $$
DECLARE
    v_before  text;
    v_balance balances;
BEGIN
    SELECT account_status INTO v_before FROM balances WHERE customer_id = p_customer_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE balances SET account_status = p_status WHERE customer_id = p_customer_id RETURNING * INTO v_balance;
    INSERT INTO risk_events (action, customer_id, detail, reason, operator_issuer, operator, operator_peer)
    VALUES ('account_status_set', p_customer_id, jsonb_build_object('before', v_before, 'after', p_status), p_reason,
            p_issuer, p_operator, p_peer);
    RETURN v_balance;
END;
$$;

-- Sets limits with their audit row. For a customer, each limit given overrides the firm's and each null reverts to
-- it; for the firm (''), each limit given replaces its default and each null keeps it. Returns the limits in force
-- for the customer (or the firm's); null for an unknown customer.
CREATE FUNCTION set_limits(p_customer_id text, p_max_order_notional numeric, p_max_order_quantity bigint,
                           p_max_daily_buy_notional numeric, p_max_orders_per_minute integer, p_reason text,
                           p_issuer text, p_operator text, p_peer text)
RETURNS risk_limits
LANGUAGE plpgsql AS $$
DECLARE
    v_before risk_limits;
    v_after  risk_limits;
BEGIN
    IF p_customer_id <> '' THEN
        PERFORM 1 FROM balances WHERE customer_id = p_customer_id FOR UPDATE;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
    END IF;
    SELECT * INTO v_before FROM risk_limits WHERE customer_id = p_customer_id FOR UPDATE;
    IF p_customer_id = '' THEN
        UPDATE risk_limits SET max_order_notional = coalesce(p_max_order_notional, max_order_notional),
                               max_order_quantity = coalesce(p_max_order_quantity, max_order_quantity),
                               max_daily_buy_notional = coalesce(p_max_daily_buy_notional, max_daily_buy_notional),
                               max_orders_per_minute = coalesce(p_max_orders_per_minute, max_orders_per_minute),
                               updated_at = now()
         WHERE customer_id = ''
        RETURNING * INTO v_after;
    ELSE
        INSERT INTO risk_limits (customer_id, max_order_notional, max_order_quantity, max_daily_buy_notional,
                                 max_orders_per_minute)
        VALUES (p_customer_id, p_max_order_notional, p_max_order_quantity, p_max_daily_buy_notional,
                p_max_orders_per_minute)
        ON CONFLICT (customer_id) DO UPDATE SET max_order_notional = EXCLUDED.max_order_notional,
                                                max_order_quantity = EXCLUDED.max_order_quantity,
                                                max_daily_buy_notional = EXCLUDED.max_daily_buy_notional,
                                                max_orders_per_minute = EXCLUDED.max_orders_per_minute,
                                                updated_at = now()
        RETURNING * INTO v_after;
    END IF;
    INSERT INTO risk_events (action, customer_id, detail, reason, operator_issuer, operator, operator_peer)
    VALUES ('limits_set', nullif(p_customer_id, ''),
            jsonb_build_object('before', to_jsonb(v_before) - 'customer_id' - 'updated_at',
                               'after', to_jsonb(v_after) - 'customer_id' - 'updated_at'),
            p_reason, p_issuer, p_operator, p_peer);
    RETURN limits_in_force(p_customer_id);
END;
$$;

-- The limits in force for a customer: its own where set, the firm's elsewhere ('' : the firm's).
CREATE FUNCTION limits_in_force(p_customer_id text) RETURNS risk_limits
LANGUAGE sql STABLE AS $$
    SELECT p_customer_id,
           coalesce(c.max_order_notional, f.max_order_notional),
           coalesce(c.max_order_quantity, f.max_order_quantity),
           coalesce(c.max_daily_buy_notional, f.max_daily_buy_notional),
           coalesce(c.max_orders_per_minute, f.max_orders_per_minute),
           greatest(c.updated_at, f.updated_at)
      FROM risk_limits f LEFT JOIN risk_limits c ON c.customer_id = p_customer_id AND p_customer_id <> ''
     WHERE f.customer_id = ''
$$;

-- ------------------------------------------------------------------------------------------------ to the venue

-- How many times the order was claimed: once means the claim that holds it is the first, so no send of it can have
-- been made before (a second claim follows a worker that may have sent it and died, or a redelivery).
ALTER TABLE orders ADD COLUMN claims integer NOT NULL DEFAULT 0;

-- Ends a waiting order that never reached the venue as REJECTED with the code and reason, its reservation released.
CREATE FUNCTION reject_unsent(p_order orders, p_code text, p_reason text) RETURNS orders
LANGUAGE plpgsql AS $$
DECLARE
    v_order orders;
BEGIN
    PERFORM release_reservation(p_order);
    UPDATE orders SET status = 'REJECTED', status_reason = p_reason, reject_code = p_code, reserved_cash = 0,
                      reserved_shares = 0, updated_at = now()
     WHERE order_id = p_order.order_id
    RETURNING * INTO v_order;
    PERFORM append_order_event(v_order, 'rejected');
    RETURN v_order;
END;
$$;

-- A halt stops orders that have not left (15c3-5 checks before an order leaves), and never holds them for its clear
-- (their collars would be stale by then): the customer's waiting orders through p_through under a halt in force are
-- REJECTED TRADING_HALTED, those never claimed. One claimed before may be at the venue already: it and the
-- customer's later orders wait (FIFO), until the halt is cleared or its cancel job asks the venue. Returns the
-- sequence a claim may take the customer's orders through. Under the customer's lock, taken first, as everywhere.
CREATE FUNCTION reject_halted_waiting(p_customer_id text, p_through bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_order orders;
    v_halt  trading_halts;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM trading_halts WHERE cleared_at IS NULL) THEN
        RETURN p_through;
    END IF;
    PERFORM 1 FROM balances WHERE customer_id = p_customer_id FOR UPDATE;
    FOR v_order IN
        SELECT * FROM orders
         WHERE customer_id = p_customer_id AND status = 'PLACED' AND held_by IS NULL AND sequence <= p_through
           AND cancel_requested_at IS NULL
         ORDER BY sequence
           FOR UPDATE
    LOOP
        v_halt := halt_in_force(p_customer_id, v_order.symbol);
        CONTINUE WHEN v_halt.halt_id IS NULL;
        IF v_order.claims > 0 THEN
            RETURN v_order.sequence - 1;
        END IF;
        PERFORM reject_unsent(v_order, 'TRADING_HALTED', halt_notice(v_halt));
    END LOOP;
    RETURN p_through;
END;
$$;

-- As 0013's, now counting claims and passing the customer's waiting orders through reject_halted_waiting first.
CREATE OR REPLACE FUNCTION claim_for_submission(p_order_id text, p_batch_max integer) RETURNS SETOF orders
LANGUAGE plpgsql AS $$
DECLARE
    v_target   orders;
    v_customer record;
    v_through  bigint;
BEGIN
    SELECT * INTO v_target FROM orders WHERE order_id = p_order_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM paused_shards WHERE shard = v_target.shard) THEN
        RAISE EXCEPTION 'shard % is paused', v_target.shard USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF v_target.held_by IS NOT NULL THEN
        PERFORM lift_due_hold(v_target.customer_id);
    END IF;
    FOR v_customer IN
        SELECT p.customer_id, max(p.sequence) AS through FROM (
            SELECT v_target.customer_id, v_target.sequence
            UNION ALL
            (SELECT o.customer_id, o.sequence FROM orders o
              WHERE o.shard = v_target.shard AND o.status = 'PLACED' AND o.held_by IS NULL
                AND o.claimed_at IS DISTINCT FROM now()
              ORDER BY o.created_at
              LIMIT greatest(p_batch_max - 1, 0))
        ) AS p (customer_id, sequence)
        GROUP BY p.customer_id ORDER BY p.customer_id
    LOOP
        CONTINUE WHEN mark_if_held(v_customer.customer_id);
        v_through := reject_halted_waiting(v_customer.customer_id, v_customer.through);
        RETURN QUERY
            WITH claimed AS (
                UPDATE orders o SET claimed_at = now(), claims = o.claims + 1
                 WHERE o.customer_id = v_customer.customer_id AND o.status = 'PLACED'
                   AND o.sequence <= v_through AND o.claimed_at IS DISTINCT FROM now()
                   AND o.held_by IS NULL AND o.cancel_requested_at IS NULL
                   AND (o.expires_at IS NULL OR o.expires_at > now())
                RETURNING o.*
            )
            SELECT * FROM claimed c ORDER BY c.sequence;
    END LOOP;
END;
$$;

-- The worker's check just before it sends claimed orders: each under a halt in force is kept from the venue, REJECTED
-- TRADING_HALTED when this is its first claim and no earlier send's outcome is unknown ('rejected'), else left
-- waiting as reject_halted_waiting leaves it ('withheld'). Returns those it kept back; the worker sends the rest.
CREATE FUNCTION withhold_halted_claims(p_order_ids text[])
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
        CONTINUE WHEN v_order.status <> 'PLACED';
        IF v_order.claims = 1 AND v_order.unknown_outcomes = 0 THEN
            PERFORM reject_unsent(v_order, 'TRADING_HALTED', halt_notice(v_halt));
            RETURN QUERY SELECT v_order.order_id, 'rejected';
        ELSE
            RETURN QUERY SELECT v_order.order_id, 'withheld';
        END IF;
    END LOOP;
END;
$$;

-- ----------------------------------------------------------------------------------------------------- privileges

ALTER FUNCTION place_orders_v3(text[], text[], text[], text[], text[], bigint[], numeric[], numeric[], text[], text[],
                               text[], bytea[], timestamptz[]) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION set_trading_halt(text, text, text, text, boolean, text, text, text)
    SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION clear_trading_halt(bigint, text, text, text, text) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION set_account_status(text, text, text, text, text, text)
    SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION set_limits(text, numeric, bigint, numeric, integer, text, text, text, text)
    SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION withhold_halted_claims(text[]) SECURITY DEFINER SET search_path = public, pg_temp;

-- As 0017 left every sequence (owner only, spelled out).
REVOKE ALL ON SEQUENCE trading_halts_halt_id_seq, risk_events_event_id_seq FROM PUBLIC;

GRANT EXECUTE ON FUNCTION place_orders_v3(text[], text[], text[], text[], text[], bigint[], numeric[], numeric[],
                                          text[], text[], text[], bytea[], timestamptz[]) TO broker_orders;
-- The operations service alone changes halts, statuses and limits, and reads them with their audit.
GRANT EXECUTE ON FUNCTION set_trading_halt(text, text, text, text, boolean, text, text, text),
                          clear_trading_halt(bigint, text, text, text, text),
                          set_account_status(text, text, text, text, text, text),
                          set_limits(text, numeric, bigint, numeric, integer, text, text, text, text),
                          limits_in_force(text) TO broker_operations;
GRANT SELECT ON trading_halts, risk_limits, risk_events TO broker_operations;
-- The workers read the halts (their cache, checked before each send) and keep halted claims from the venue.
GRANT EXECUTE ON FUNCTION withhold_halted_claims(text[]) TO broker_execution;
GRANT SELECT ON trading_halts TO broker_execution;
