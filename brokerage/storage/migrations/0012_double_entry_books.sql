-- The books in double entry (DESIGN.md "The books"), exact amounts with derived averages, the reservation computed
-- here rather than taken from the caller, and one helper for every move of an order's status.
--
-- ledger_entries held single-entry deltas of one customer's buckets, and reconciliation proved balances against
-- deltas that only restated them: an edit of a balance with a matching entry beside it created money, and every
-- check stayed clean. Now every movement is one transfer between two accounts (TigerBeetle's model), append-only,
-- under a deterministic unique key, so that money can only come from an account that reconciliation checks against
-- a source outside this database: funding against its audited record, clearing against the venue's drop copy, the
-- error account against its break.
--
-- Expand step of expand/contract: the functions the previous release calls keep their names, arguments and
-- results, and the ones that move money now write transfers (they no longer write ledger_entries, which stays,
-- frozen, until a contract step drops it); a function whose arguments change gets a new name beside the old.

-- Accounts. An account is (owner, name, asset): a customer's 'available' and 'reserved' of each asset (cash 'USD',
-- or the shares of a symbol, where available means free to sell), and the firm's 'clearing' (with the venue),
-- 'funding' and 'error' (real fills that cannot go to a customer) of each asset. A transfer names its asset once,
-- so both its accounts are of that asset by construction, and its customer once, so no transfer moves between two
-- customers (none may need a cross-customer transaction). Firm accounts keep no running balance, which would be a
-- hot row serialising all settlement: their balances are sums. The customers' are the balances and positions rows,
-- which the guarded updates work on; reconciliation proves them against their transfers.

-- Every credit of cash from outside (a deposit; the demo's opening balances), with who booked it and why.
CREATE TABLE fundings (
    funding_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id text NOT NULL,
    asset       text NOT NULL DEFAULT 'USD',
    amount      numeric(20,4) NOT NULL CHECK (amount > 0),
    reason      text NOT NULL,
    funded_by   text NOT NULL,
    funded_at   timestamptz NOT NULL DEFAULT now()
);

-- Every repair an operator made (brokerctl): what was done to which break or order, by whom, when and why. A repair
-- never edits a balance: whatever it moves is transfers that name it.
CREATE TABLE repairs (
    repair_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action      text NOT NULL,
    break_id    bigint REFERENCES breaks,
    order_id    text,
    operator    text NOT NULL,
    note        text NOT NULL,
    repaired_at timestamptz NOT NULL DEFAULT now(),
    CHECK (break_id IS NOT NULL OR order_id IS NOT NULL)
);

CREATE TABLE transfers (
    transfer_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- booking order (per customer: its lock's)
    transfer_key   text NOT NULL UNIQUE,  -- order_id:reserve, exec_id:cash, exec_id:shares, order_id:release, ...
    kind           text NOT NULL,
    asset          text NOT NULL,         -- 'USD' or a symbol
    customer_id    text,                  -- whose accounts it touches; null for the firm's alone
    debit_account  text NOT NULL,         -- the amount leaves this account ...
    credit_account text NOT NULL,         -- ... and arrives in this one
    amount         numeric(20,4) NOT NULL CHECK (amount > 0),
    order_id       text,
    exec_id        text,
    funding_id     bigint REFERENCES fundings,
    break_id       bigint REFERENCES breaks,
    repair_id      bigint REFERENCES repairs,
    booked_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT transfers_accounts CHECK (
        debit_account <> credit_account
        AND debit_account IN ('available', 'reserved', 'clearing', 'funding', 'error')
        AND credit_account IN ('available', 'reserved', 'clearing', 'funding', 'error')),
    CONSTRAINT transfers_customer CHECK (
        (customer_id IS NOT NULL) = (debit_account IN ('available', 'reserved') OR credit_account IN ('available', 'reserved'))),
    -- Each kind moves between its own accounts and names what caused it, so reconciliation can prove it.
    CONSTRAINT transfers_kind CHECK (CASE kind
        WHEN 'funding' THEN (debit_account, credit_account) = ('funding', 'available') AND funding_id IS NOT NULL
        WHEN 'reserve' THEN (debit_account, credit_account) = ('available', 'reserved') AND order_id IS NOT NULL
        WHEN 'release' THEN (debit_account, credit_account) = ('reserved', 'available') AND order_id IS NOT NULL
        WHEN 'fill' THEN ((debit_account, credit_account) IN (('reserved', 'clearing'), ('clearing', 'available')))
                         AND order_id IS NOT NULL AND exec_id IS NOT NULL
        WHEN 'error' THEN ((debit_account, credit_account) IN (('clearing', 'error'), ('error', 'clearing')))
                          AND exec_id IS NOT NULL AND break_id IS NOT NULL
        WHEN 'repair' THEN repair_id IS NOT NULL
        ELSE false END)
);

-- An account's balance: what its transfers brought in, less what they took out. Customers' accounts carry their
-- customer; the firm's (clearing, funding, error) none.
CREATE VIEW account_balances AS
SELECT CASE WHEN m.account IN ('available', 'reserved') THEN m.customer_id END AS customer_id, m.account, m.asset,
       sum(m.amount) AS balance
  FROM (SELECT customer_id, credit_account AS account, asset, amount FROM transfers
        UNION ALL
        SELECT customer_id, debit_account, asset, -amount FROM transfers) AS m
 GROUP BY 1, 2, 3;

-- Amounts are exact; averages are derived from them, by this one rule.
CREATE FUNCTION average_price(p_notional numeric, p_quantity bigint) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_quantity > 0 THEN round(p_notional / p_quantity, 4) END
$$;

-- A holding of one stock as its fills build it: a buy adds its shares and their cost to the cost basis, a sell
-- takes its shares and their share of the basis (rounded to the books' four decimals; all of it with the last
-- share). Settlement moves positions with it, and reconciliation folds a customer's fills with it, in booking
-- order, to prove the position's quantity and cost basis.
CREATE TYPE holding AS (quantity bigint, cost_basis numeric);

CREATE FUNCTION holding_after_fill(p_holding holding, p_side text, p_quantity bigint, p_price numeric)
RETURNS holding
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_side = 'BUY'
                THEN ROW(p_holding.quantity + p_quantity, p_holding.cost_basis + p_quantity * p_price)::holding
                WHEN p_holding.quantity = p_quantity THEN ROW(0, 0)::holding
                ELSE ROW(p_holding.quantity - p_quantity,
                         p_holding.cost_basis - round(p_holding.cost_basis * p_quantity / p_holding.quantity, 4))::holding
           END
$$;

CREATE AGGREGATE holding_from_fills(text, bigint, numeric) (
    SFUNC = holding_after_fill, STYPE = holding, INITCOND = '(0,0)'
);

-- The order's fills as an exact notional, its average price derived.
ALTER TABLE orders ADD COLUMN filled_notional numeric(20,4) NOT NULL DEFAULT 0;
UPDATE orders o SET filled_notional = e.notional
  FROM (SELECT order_id, sum(quantity * price) AS notional FROM executions WHERE quantity > 0 GROUP BY order_id) e
 WHERE e.order_id = o.order_id;
ALTER TABLE orders DROP COLUMN average_fill_price;
ALTER TABLE orders ADD COLUMN average_fill_price numeric(20,4)
    GENERATED ALWAYS AS (average_price(filled_notional, filled_quantity)) STORED;

-- The reservation is structural: an open buy holds at least its unfilled rest at its protection price (a fill
-- never costs more: the venue never fills beyond it, and one that did is the error account's), an open sell
-- exactly its unfilled shares; a terminal order holds nothing (0001).
ALTER TABLE orders ADD CONSTRAINT orders_reservation_covers_rest CHECK (
    status IN ('FILLED', 'REJECTED', 'CANCELED')
    OR (side = 'BUY' AND reserved_shares = 0 AND protection_price IS NOT NULL
        AND reserved_cash >= (quantity - filled_quantity) * protection_price)
    OR (side = 'SELL' AND reserved_cash = 0 AND reserved_shares = quantity - filled_quantity));

-- Positions: the cost basis exact, the average cost derived; the basis of what is held now, folded from its fills.
ALTER TABLE positions ADD COLUMN cost_basis numeric(20,4) NOT NULL DEFAULT 0;
UPDATE positions p SET cost_basis = (f.held).cost_basis
  FROM (SELECT l.customer_id, o.symbol,
               holding_from_fills(o.side, e.quantity, e.price ORDER BY l.entry_id) AS held
          FROM ledger_entries l JOIN executions e USING (exec_id) JOIN orders o ON o.order_id = e.order_id
         WHERE l.kind = 'fill' AND l.asset <> 'USD'
         GROUP BY l.customer_id, o.symbol) f
 WHERE (f.customer_id, f.symbol) = (p.customer_id, p.symbol);
ALTER TABLE positions DROP COLUMN average_cost;
ALTER TABLE positions ADD COLUMN average_cost numeric(20,4)
    GENERATED ALWAYS AS (coalesce(average_price(cost_basis, quantity), 0)) STORED;

-- The ledger's history, as transfers: fundings with a record each, then every other entry in the order written.
WITH funded AS (
    INSERT INTO fundings (customer_id, asset, amount, reason, funded_by, funded_at)
    SELECT customer_id, asset, available_delta, 'opening balance, booked before the books were double-entry',
           'migration 0012', created_at
      FROM ledger_entries WHERE kind = 'funding' ORDER BY entry_id
    RETURNING *
)
INSERT INTO transfers (transfer_key, kind, asset, customer_id, debit_account, credit_account, amount, funding_id,
                       booked_at)
SELECT 'funding:' || funding_id, 'funding', asset, customer_id, 'funding', 'available', amount, funding_id, funded_at
  FROM funded ORDER BY funding_id;

INSERT INTO transfers (transfer_key, kind, asset, customer_id, debit_account, credit_account, amount, order_id,
                       exec_id, booked_at)
SELECT CASE WHEN kind = 'fill' THEN exec_id || CASE WHEN asset = 'USD' THEN ':cash' ELSE ':shares' END
            ELSE order_id || ':' || kind END,
       kind, asset, customer_id,
       -- a fill's entry moved its amount out of the customer's reservation (net < 0) or into their available
       CASE WHEN kind = 'reserve' THEN 'available' WHEN kind = 'release' OR net < 0 THEN 'reserved'
            ELSE 'clearing' END,
       CASE WHEN kind = 'reserve' THEN 'reserved' WHEN kind = 'release' OR net > 0 THEN 'available'
            ELSE 'clearing' END,
       CASE WHEN kind = 'fill' THEN abs(net) ELSE abs(reserved_delta) END,
       order_id, exec_id, created_at
  FROM (SELECT *, available_delta + reserved_delta AS net FROM ledger_entries WHERE kind <> 'funding') AS entry
 ORDER BY entry_id;

-- Every status change goes through this helper, which asks the domain's table (0004): the state machine has one
-- source. The functions decide with it; the trigger refuses any change of status, theirs or anyone's, that it does
-- not allow.
CREATE FUNCTION order_can_move(p_from text, p_to text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM order_transitions WHERE from_status = p_from AND to_status = p_to)
$$;

CREATE FUNCTION orders_move_forward() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT order_can_move(OLD.status, NEW.status) THEN
        RAISE EXCEPTION 'order % cannot move from % to %', NEW.order_id, OLD.status, NEW.status
              USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER orders_move_forward BEFORE UPDATE OF status ON orders
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION orders_move_forward();

-- Opens and funds customers not yet known, each credit a transfer from the funding account with its record. The
-- demo seed and the benchmarks call it; a deposit would be a funding of a customer already known.
CREATE FUNCTION fund_new_customers(p_customer_ids text[], p_amount numeric, p_reason text, p_funded_by text)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_funded integer;
BEGIN
    WITH opened AS (
        INSERT INTO balances (customer_id, available)
        SELECT c, p_amount FROM unnest(p_customer_ids) AS c
        ON CONFLICT (customer_id) DO NOTHING
        RETURNING customer_id
    ), funded AS (
        INSERT INTO fundings (customer_id, amount, reason, funded_by)
        SELECT customer_id, p_amount, p_reason, p_funded_by FROM opened
        RETURNING funding_id, customer_id, asset, amount
    )
    INSERT INTO transfers (transfer_key, kind, asset, customer_id, debit_account, credit_account, amount, funding_id)
    SELECT 'funding:' || funding_id, 'funding', asset, customer_id, 'funding', 'available', amount, funding_id
      FROM funded;
    GET DIAGNOSTICS v_funded = ROW_COUNT;
    RETURN v_funded;
END;
$$;

-- Gives back what an order still holds (its row as it stood before it ended), to its customer's available cash or
-- free shares, as one transfer. The caller holds the customer's lock and zeroes the order's reservation.
DROP FUNCTION release_reservation(text);
CREATE FUNCTION release_reservation(p_order orders) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_order.reserved_cash > 0 THEN
        UPDATE balances SET available = available + p_order.reserved_cash, reserved = reserved - p_order.reserved_cash,
                            updated_at = now()
         WHERE customer_id = p_order.customer_id;
    ELSIF p_order.reserved_shares > 0 THEN
        UPDATE positions SET reserved = reserved - p_order.reserved_shares, updated_at = now()
         WHERE customer_id = p_order.customer_id AND symbol = p_order.symbol;
    ELSE
        RETURN;
    END IF;
    INSERT INTO transfers (transfer_key, kind, asset, customer_id, debit_account, credit_account, amount, order_id)
    VALUES (p_order.order_id || ':release', 'release',
            CASE WHEN p_order.reserved_cash > 0 THEN 'USD' ELSE p_order.symbol END, p_order.customer_id,
            'reserved', 'available', greatest(p_order.reserved_cash, p_order.reserved_shares), p_order.order_id);
END;
$$;

-- A market order is a DAY order (rule 10): it expires at the close of the session it was placed in (null: the market
-- never closes). 0013 expires what is still waiting then.
ALTER TABLE orders ADD COLUMN expires_at timestamptz;

-- Placement (rule 1, 2, 3), one order: the reservation is computed here, quantity x protection price for a buy
-- (the caller's price is the quote and collar rounded to the tick, a policy of the order desk) and the shares for a
-- sell, never taken from the caller; what it holds moves from the customer's available cash (or free shares) to
-- reserved as one transfer. A retry of the client_order_id returns the first order and reserves nothing. Returns
-- null for an unknown customer.
CREATE FUNCTION place_order_v2(
    p_order_id text,
    p_customer_id text,
    p_client_order_id text,
    p_symbol text,
    p_side text,
    p_quantity bigint,
    p_protection_price numeric,
    p_reject_reason text,  -- decided before the transaction (halted, no quote, ...); null to try to reserve
    p_subject text,        -- where the relay publishes the order
    p_payload bytea,
    p_expires_at timestamptz  -- the close of its session; null when the market never closes
) RETURNS orders
LANGUAGE plpgsql AS $$
DECLARE
    v_balance balances;
    v_order   orders;
    v_status  text := 'PLACED';
    v_reason  text := coalesce(p_reject_reason, '');
    v_held    bigint;
    v_cash    numeric := 0;
    v_counted boolean := false;  -- the customer's sequences already taken by the reserving update
BEGIN
    -- Rule 3: the row lock orders the customer's placements; the sequence is taken under it.
    SELECT * INTO v_balance FROM balances WHERE customer_id = p_customer_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    -- Rule 2: a retry (also one that waited on the lock above) returns the first order and reserves nothing.
    SELECT * INTO v_order FROM orders WHERE customer_id = p_customer_id AND client_order_id = p_client_order_id;
    IF FOUND THEN
        RETURN v_order;
    END IF;

    -- Rule 1: reserve with a guarded update (which also takes the sequences); no row updated means not enough.
    IF p_reject_reason IS NULL AND p_side = 'BUY' THEN
        v_cash := p_quantity * p_protection_price;
        UPDATE balances SET available = available - v_cash, reserved = reserved + v_cash,
                            next_order_sequence = next_order_sequence + 1,
                            next_event_sequence = next_event_sequence + 1,
                            updated_at = now()
         WHERE customer_id = p_customer_id AND available >= v_cash;
        v_counted := FOUND;
        IF NOT FOUND THEN
            v_status := 'REJECTED';
            v_reason := format('insufficient buying power: requires %s, available %s',
                               format_money(v_cash), format_money(v_balance.available));
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
                        protection_price, reserved_cash, reserved_shares, status, status_reason, expires_at)
    VALUES (p_order_id, p_client_order_id, p_customer_id, v_balance.next_order_sequence, p_symbol, p_side,
            p_quantity, p_protection_price,
            CASE WHEN v_status = 'PLACED' THEN v_cash ELSE 0 END,
            CASE WHEN v_status = 'PLACED' AND p_side = 'SELL' THEN p_quantity ELSE 0 END,
            v_status, v_reason, p_expires_at)
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
        INSERT INTO transfers (transfer_key, kind, asset, customer_id, debit_account, credit_account, amount,
                               order_id)
        VALUES (p_order_id || ':reserve', 'reserve', CASE p_side WHEN 'BUY' THEN 'USD' ELSE p_symbol END,
                p_customer_id, 'available', 'reserved', greatest(v_cash, v_order.reserved_shares), p_order_id);
        -- Rule 4: the message commits with the order; the relay publishes it.
        INSERT INTO outbox (dedupe_id, subject, payload) VALUES (p_order_id, p_subject, p_payload);
    END IF;
    RETURN v_order;
END;
$$;

-- Group commit of placements, as place_orders (0002) without the caller's reservation amounts and with each order's
-- expiry: one row per order, in the order given, a row of nulls for an unknown customer.
CREATE FUNCTION place_orders_v2(
    p_order_ids text[],
    p_customer_ids text[],
    p_client_order_ids text[],
    p_symbols text[],
    p_sides text[],
    p_quantities bigint[],
    p_protection_prices numeric[],
    p_reject_reasons text[],
    p_subjects text[],
    p_payloads bytea[],
    p_expires_ats timestamptz[]
) RETURNS SETOF orders
LANGUAGE plpgsql SET enable_seqscan = off AS $$
BEGIN
    FOR i IN 1 .. cardinality(p_order_ids) LOOP
        RETURN NEXT place_order_v2(p_order_ids[i], p_customer_ids[i], p_client_order_ids[i], p_symbols[i],
                                   p_sides[i], p_quantities[i], p_protection_prices[i], p_reject_reasons[i],
                                   p_subjects[i], p_payloads[i], p_expires_ats[i]);
    END LOOP;
END;
$$;

-- The previous release's placement: its reservation amounts are ignored, the reservation computed as above, and its
-- orders never expire (it knows no expiry; its pods are gone within the rollout).
DROP FUNCTION place_order(text, text, text, text, text, bigint, numeric, numeric, text, text, bytea);
CREATE OR REPLACE FUNCTION place_orders(
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
LANGUAGE sql SET enable_seqscan = off AS $$
    SELECT * FROM place_orders_v2(p_order_ids, p_customer_ids, p_client_order_ids, p_symbols, p_sides, p_quantities,
                                  p_protection_prices, p_reject_reasons, p_subjects, p_payloads,
                                  array_fill(NULL::timestamptz, ARRAY[cardinality(p_order_ids)]))
$$;

-- Cancels an order no worker has claimed (rule 6) and releases what it holds. Returns the order as it now
-- stands (canceled, or untouched when it could not be), or nothing when the customer has no such order.
CREATE OR REPLACE FUNCTION cancel_placed_order(p_customer_id text, p_order_id text) RETURNS SETOF orders
LANGUAGE plpgsql AS $$
DECLARE
    v_order orders;
BEGIN
    PERFORM 1 FROM balances WHERE customer_id = p_customer_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT * INTO v_order FROM orders WHERE order_id = p_order_id AND customer_id = p_customer_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF v_order.status <> 'PLACED' OR v_order.claimed_at IS NOT NULL THEN
        RETURN NEXT v_order;  -- at the exchange, on its way there, or ended: not ours alone to cancel
        RETURN;
    END IF;

    PERFORM release_reservation(v_order);
    UPDATE orders SET status = 'CANCELED', status_reason = 'canceled by the customer',
                      reserved_cash = 0, reserved_shares = 0, updated_at = now()
     WHERE order_id = p_order_id
    RETURNING * INTO v_order;
    PERFORM append_order_event(v_order, 'canceled');
    RETURN NEXT v_order;
END;
$$;

-- The exchange refused the order: REJECTED with its reason and the reservation released, unless it already
-- filled or ended. Returns the order as it now stands; null if unknown.
CREATE OR REPLACE FUNCTION record_venue_rejection(p_order_id text, p_reason text) RETURNS orders
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

    IF order_can_move(v_order.status, 'REJECTED') AND v_order.filled_quantity = 0 THEN
        PERFORM release_reservation(v_order);
        UPDATE orders SET status = 'REJECTED', status_reason = p_reason, reserved_cash = 0, reserved_shares = 0,
                          updated_at = now()
         WHERE order_id = p_order_id
        RETURNING * INTO v_order;
        PERFORM append_order_event(v_order, 'rejected');
    END IF;
    RETURN v_order;
END;
$$;

-- As in 0011: SUBMITTED, unless a report already moved the order further, which it keeps; the venue's id is kept
-- either way. The order as it now stands; null if unknown.
CREATE OR REPLACE FUNCTION record_submitted(p_order_id text, p_venue_order_id text) RETURNS orders
LANGUAGE plpgsql AS $$
DECLARE
    v_order orders;
BEGIN
    SELECT * INTO v_order FROM orders WHERE order_id = p_order_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM balances WHERE customer_id = v_order.customer_id FOR UPDATE;
    SELECT * INTO v_order FROM orders WHERE order_id = p_order_id FOR UPDATE;  -- as it stands, held until commit

    IF order_can_move(v_order.status, 'SUBMITTED') THEN
        UPDATE orders SET status = 'SUBMITTED', venue_order_id = p_venue_order_id, updated_at = now()
         WHERE order_id = p_order_id
        RETURNING * INTO v_order;
        PERFORM append_order_event(v_order, 'submitted');
    ELSIF v_order.venue_order_id IS NULL THEN
        UPDATE orders SET venue_order_id = p_venue_order_id WHERE order_id = p_order_id
        RETURNING * INTO v_order;
    END IF;
    RETURN v_order;
END;
$$;

-- Settlement (rule 7) booking transfers, and no report that cannot be applied holding anything up.
--
-- A break is kept once under its key: an impossible report (well-formed, but no order of events explains it) under
-- its exec_id, which it claims, so a copy of it is a duplicate; a malformed one (it could not be parsed, or failed
-- the form checks, or the database refused it) whole, as its bytes, under 'malformed:' and its exec_id, else the
-- SHA-256 of its bytes. A malformed report's break claims nothing: a later well-formed copy is booked, and resolves
-- it as superseded. A real fill among the impossible reports (after the order ended, beyond its quantity, its
-- protection price or the venue's final quantity, for another order than ours, or for none) is booked between the
-- clearing account and the firm's error account: the venue moved the cash and the shares, and no real fill
-- vanishes. An operator resolves each break with brokerctl; resolution, who and why are kept on its row.
ALTER TABLE breaks
    ADD COLUMN break_key       text,
    ADD COLUMN report_bytes    bytea,
    ADD COLUMN resolution      text CHECK (resolution IN ('superseded', 'accepted_venue', 'written_off', 'expired',
                                                          'redriven')),
    ADD COLUMN resolved_by     text,
    ADD COLUMN resolution_note text NOT NULL DEFAULT '';
UPDATE breaks SET break_key = exec_id;
ALTER TABLE breaks
    ALTER COLUMN break_key SET NOT NULL,
    ADD CONSTRAINT breaks_break_key_key UNIQUE (break_key),
    DROP CONSTRAINT breaks_exec_id_key,
    ALTER COLUMN exec_id DROP NOT NULL,
    ALTER COLUMN order_id DROP NOT NULL,
    ALTER COLUMN report DROP NOT NULL,
    ADD CONSTRAINT breaks_resolved CHECK ((resolved_at IS NULL) = (resolution IS NULL));
CREATE INDEX breaks_malformed_open ON breaks (exec_id) WHERE kind IN ('malformed', 'refused') AND resolved_at IS NULL;

-- Keeps a report that cannot be applied as a break under its exec_id, and books a real fill among them to the error
-- account. Returns 'break', or 'duplicate' for one kept before.
CREATE FUNCTION book_break(
    p_problem text, p_exec_id text, p_order_id text, p_venue_order_id text, p_exec_type text, p_last_quantity bigint,
    p_last_price numeric, p_cumulative_quantity bigint, p_reason text, p_transact_time timestamptz, p_symbol text,
    p_side text, p_order_quantity bigint
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_break_id bigint;
    v_buy      boolean := p_side = 'BUY';
BEGIN
    INSERT INTO breaks (break_key, exec_id, order_id, kind, detail, report)
    VALUES (p_exec_id, p_exec_id, p_order_id, split_part(p_problem, ':', 1), p_problem,
            report_document(p_exec_id, p_order_id, p_venue_order_id, p_exec_type, p_last_quantity, p_last_price,
                            p_cumulative_quantity, p_reason, p_transact_time, p_symbol, p_side, p_order_quantity))
    ON CONFLICT (break_key) DO NOTHING
    RETURNING break_id INTO v_break_id;
    IF NOT FOUND THEN
        RETURN 'duplicate';
    END IF;
    IF p_exec_type IN ('PARTIAL_FILL', 'FILL') AND p_symbol <> '' THEN
        -- A buy: the venue took the cash from clearing and gave its shares, which the error account now holds.
        INSERT INTO transfers (transfer_key, kind, asset, debit_account, credit_account, amount, order_id, exec_id,
                               break_id)
        VALUES (p_exec_id || ':cash', 'error', 'USD', CASE WHEN v_buy THEN 'error' ELSE 'clearing' END,
                CASE WHEN v_buy THEN 'clearing' ELSE 'error' END, p_last_quantity * p_last_price, p_order_id,
                p_exec_id, v_break_id),
               (p_exec_id || ':shares', 'error', p_symbol, CASE WHEN v_buy THEN 'clearing' ELSE 'error' END,
                CASE WHEN v_buy THEN 'error' ELSE 'clearing' END, p_last_quantity, p_order_id, p_exec_id, v_break_id);
    END IF;
    RETURN 'break';
END;
$$;

-- A well-formed copy of a report resolves what a malformed copy of it left.
CREATE FUNCTION supersede_malformed(p_exec_id text) RETURNS void
LANGUAGE sql AS $$
    UPDATE breaks SET resolved_at = now(), resolution = 'superseded', resolved_by = 'settlement',
                      resolution_note = 'a well-formed copy of the report arrived'
     WHERE exec_id = p_exec_id AND kind IN ('malformed', 'refused') AND resolved_at IS NULL
$$;

-- Why a report cannot be applied to the order as it stands, or null when it can (as in 0004, its form aside: the
-- form of a report is checked before it gets here, and a malformed one is a break of its own).
CREATE OR REPLACE FUNCTION settlement_break(p_order orders, p_exec_type text, p_last_quantity bigint,
                                            p_last_price numeric, p_cumulative_quantity bigint) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_filled bigint := p_order.filled_quantity;
BEGIN
    IF p_exec_type IN ('PARTIAL_FILL', 'FILL') THEN
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

-- Rule 7: applies one well-formed execution report exactly once (the reasoning of 0004 and 0007 stands). Money
-- follows executions: every new exec_id that is possible is booked whatever the order's status, as transfers (a
-- buy's cost from its reservation to clearing and its shares from clearing to the customer; a sell's the other way),
-- the holding moved by holding_after_fill; the status moves only forward, to the furthest the booked facts allow;
-- the unused reservation is released, as a transfer, once the booked quantity reaches the exchange's final
-- cumulative quantity. One that is impossible is a break (a fill among them booked to the error account). Returns
-- what happened ('applied', 'duplicate' or 'break'), the customer, and the customer's last event sequence when the
-- report changed what a client sees.
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
    p_symbol text,
    p_side text,
    p_order_quantity bigint
) RETURNS TABLE (outcome text, customer_id text, events_through bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_customer text;
    v_order    orders;
    v_before   orders;
    v_problem  text;
    v_target   text;
    v_ended    boolean;
    v_fill     boolean := p_exec_type IN ('PARTIAL_FILL', 'FILL');
    v_amount   numeric := 0;  -- the fill's cash: paid out of a buy's reservation, credited for a sell
    v_cash     numeric := 0;  -- a buy's reservation released as the order ends
    v_shares   bigint := 0;   -- a sell's reserved shares released as the order ends
    v_news     boolean;
    v_sequence bigint;
BEGIN
    -- The form was checked before (a malformed report is a break of its own); a fill the books cannot hold is
    -- refused all the same, rather than rounded by a column.
    IF v_fill AND (p_last_quantity <= 0 OR p_last_price IS NULL OR p_last_price <= 0
                   OR p_last_price <> round(p_last_price, 4) OR p_last_quantity * p_last_price >= 1e16) THEN
        RAISE EXCEPTION 'a fill of % at % is not an amount the books can hold', p_last_quantity, p_last_price
              USING ERRCODE = 'data_exception';
    END IF;
    SELECT * INTO v_order FROM orders o WHERE o.order_id = p_order_id;
    IF NOT FOUND THEN
        PERFORM supersede_malformed(p_exec_id);
        RETURN QUERY SELECT book_break('unknown_order: no such order of ours', p_exec_id, p_order_id, p_venue_order_id,
                                       p_exec_type, p_last_quantity, p_last_price, p_cumulative_quantity, p_reason,
                                       p_transact_time, p_symbol, p_side, p_order_quantity),
                            NULL::text, NULL::bigint;
        RETURN;
    END IF;
    v_customer := v_order.customer_id;
    -- The acknowledgement of an order already past PLACED with this venue id: read without a lock, this stays
    -- true (the status only moves forward, the venue id is set once), and nothing of it is news.
    IF p_exec_type = 'NEW' AND v_order.status <> 'PLACED' AND v_order.venue_order_id = p_venue_order_id
       AND report_mismatch(v_order, p_symbol, p_side, p_order_quantity) IS NULL
       AND settlement_break(v_order, p_exec_type, p_last_quantity, p_last_price, p_cumulative_quantity) IS NULL THEN
        PERFORM supersede_malformed(p_exec_id);
        RETURN QUERY SELECT 'applied', v_customer, NULL::bigint;
        RETURN;
    END IF;
    -- The customer's lock serialises this report with its twin and with the customer's other changes.
    PERFORM 1 FROM balances b WHERE b.customer_id = v_customer FOR UPDATE;
    IF EXISTS (SELECT 1 FROM executions e WHERE e.exec_id = p_exec_id)
       OR EXISTS (SELECT 1 FROM breaks k WHERE k.break_key = p_exec_id) THEN
        RETURN QUERY SELECT 'duplicate', v_customer, NULL::bigint;
        RETURN;
    END IF;
    PERFORM supersede_malformed(p_exec_id);
    SELECT * INTO v_order FROM orders o WHERE o.order_id = p_order_id FOR UPDATE;
    v_before := v_order;

    v_problem := coalesce(report_mismatch(v_order, p_symbol, p_side, p_order_quantity),
                          settlement_break(v_order, p_exec_type, p_last_quantity, p_last_price, p_cumulative_quantity));
    IF v_problem IS NOT NULL THEN
        RETURN QUERY SELECT book_break(v_problem, p_exec_id, p_order_id, p_venue_order_id, p_exec_type,
                                       p_last_quantity, p_last_price, p_cumulative_quantity, p_reason, p_transact_time,
                                       coalesce(nullif(p_symbol, ''), v_order.symbol), p_side, p_order_quantity),
                            v_customer, NULL::bigint;
        RETURN;
    END IF;

    INSERT INTO executions (exec_id, order_id, venue_order_id, exec_type, quantity, price, cumulative_quantity,
                            reason, executed_at)
    VALUES (p_exec_id, p_order_id, p_venue_order_id, p_exec_type,
            CASE WHEN v_fill THEN p_last_quantity ELSE 0 END, CASE WHEN v_fill THEN p_last_price END,
            p_cumulative_quantity, p_reason, p_transact_time);

    -- The order as the report leaves it.
    IF v_fill THEN
        v_amount := p_last_quantity * p_last_price;
        IF v_order.side = 'BUY' THEN
            v_order.reserved_cash := v_order.reserved_cash - v_amount;
        ELSE
            v_order.reserved_shares := v_order.reserved_shares - p_last_quantity;
        END IF;
        v_order.filled_quantity := v_order.filled_quantity + p_last_quantity;
        v_order.filled_notional := v_order.filled_notional + v_amount;
        v_order.average_fill_price := average_price(v_order.filled_notional, v_order.filled_quantity);
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
    IF order_can_move(v_order.status, v_target) THEN
        v_order.status := v_target;
    END IF;
    v_ended := v_order.status IN ('FILLED', 'CANCELED', 'REJECTED')
               AND v_before.status NOT IN ('FILLED', 'CANCELED', 'REJECTED');
    IF v_ended THEN  -- a terminal order holds nothing: what the fills did not use goes back
        v_cash := v_order.reserved_cash;
        v_shares := v_order.reserved_shares;
        v_order.reserved_cash := 0;
        v_order.reserved_shares := 0;
    END IF;
    v_news := (v_order.status, v_order.filled_quantity) IS DISTINCT FROM (v_before.status, v_before.filled_quantity);

    -- Written only when something of it changed: a late report may change nothing the order shows.
    IF v_order IS DISTINCT FROM v_before THEN
        UPDATE orders SET status = v_order.status, status_reason = v_order.status_reason,
                          filled_quantity = v_order.filled_quantity, filled_notional = v_order.filled_notional,
                          reserved_cash = v_order.reserved_cash, reserved_shares = v_order.reserved_shares,
                          venue_order_id = v_order.venue_order_id,
                          venue_final_quantity = v_order.venue_final_quantity,
                          venue_final_status = v_order.venue_final_status, updated_at = now()
         WHERE order_id = p_order_id;
    END IF;

    -- The shares: a buy's arrive, a sell's leave with their reservation (each moving the holding by its fill), and
    -- an ending sell's unsold reserved shares are freed.
    IF v_fill AND v_order.side = 'BUY' THEN
        INSERT INTO positions AS p (customer_id, symbol, quantity, cost_basis)
        SELECT v_customer, v_order.symbol, h.quantity, h.cost_basis
          FROM holding_after_fill(ROW(0, 0)::holding, 'BUY', p_last_quantity, p_last_price) AS h
        ON CONFLICT (customer_id, symbol) DO UPDATE
           SET (quantity, cost_basis) = (SELECT h.quantity, h.cost_basis
                                           FROM holding_after_fill(ROW(p.quantity, p.cost_basis)::holding, 'BUY',
                                                                   p_last_quantity, p_last_price) AS h),
               updated_at = now();
    ELSIF v_order.side = 'SELL' AND (v_fill OR v_shares > 0) THEN
        UPDATE positions AS p
           SET (quantity, cost_basis) = (SELECT h.quantity, h.cost_basis
                                           FROM holding_after_fill(ROW(p.quantity, p.cost_basis)::holding, 'SELL',
                                                                   CASE WHEN v_fill THEN p_last_quantity ELSE 0 END,
                                                                   p_last_price) AS h),
               reserved = p.reserved - CASE WHEN v_fill THEN p_last_quantity ELSE 0 END - v_shares,
               updated_at = now()
         WHERE p.customer_id = v_customer AND p.symbol = v_order.symbol;
    END IF;

    -- The cash, and the event's place in the customer's sequence, in one change of the balances row.
    IF v_fill OR v_cash > 0 OR v_news THEN
        UPDATE balances AS b
           SET available = b.available + CASE WHEN v_order.side = 'SELL' THEN v_amount ELSE 0 END + v_cash,
               reserved = b.reserved - CASE WHEN v_order.side = 'BUY' THEN v_amount ELSE 0 END - v_cash,
               next_event_sequence = b.next_event_sequence + CASE WHEN v_news THEN 1 ELSE 0 END,
               updated_at = CASE WHEN v_fill OR v_cash > 0 THEN now() ELSE b.updated_at END
         WHERE b.customer_id = v_customer
        RETURNING b.next_event_sequence - 1 INTO v_sequence;
    END IF;

    -- Every movement a transfer: the fill's two (cash and shares), and the release of what the order no longer
    -- holds. A report that moved nothing (an acknowledgement, a late word on an ended order) runs no insert at all.
    IF v_fill OR v_cash > 0 OR v_shares > 0 THEN
        INSERT INTO transfers (transfer_key, kind, asset, customer_id, debit_account, credit_account, amount, order_id,
                               exec_id)
        SELECT t.transfer_key, t.kind, t.asset, v_customer, t.debit_account, t.credit_account, t.amount, p_order_id,
               t.exec_id
          FROM (VALUES
                  (p_exec_id || ':cash', 'fill', 'USD',
                   CASE WHEN v_order.side = 'BUY' THEN 'reserved' ELSE 'clearing' END,
                   CASE WHEN v_order.side = 'BUY' THEN 'clearing' ELSE 'available' END, v_amount, p_exec_id, v_fill),
                  (p_exec_id || ':shares', 'fill', v_order.symbol,
                   CASE WHEN v_order.side = 'BUY' THEN 'clearing' ELSE 'reserved' END,
                   CASE WHEN v_order.side = 'BUY' THEN 'available' ELSE 'clearing' END, p_last_quantity::numeric,
                   p_exec_id, v_fill),
                  (p_order_id || ':release', 'release', 'USD', 'reserved', 'available', v_cash, NULL, v_cash > 0),
                  (p_order_id || ':release', 'release', v_order.symbol, 'reserved', 'available', v_shares::numeric,
                   NULL, v_shares > 0)
               ) AS t (transfer_key, kind, asset, debit_account, credit_account, amount, exec_id, wanted)
         WHERE t.wanted;
    END IF;

    IF v_news THEN
        INSERT INTO order_events (customer_id, sequence, order_id, event_type, status, status_reason,
                                  filled_quantity, average_fill_price, cancel_requested)
        VALUES (v_customer, v_sequence, p_order_id, lower(v_order.status), v_order.status, v_order.status_reason,
                v_order.filled_quantity, v_order.average_fill_price,
                v_order.cancel_requested_at IS NOT NULL AND v_order.status NOT IN ('FILLED', 'REJECTED', 'CANCELED'));
        RETURN QUERY SELECT 'applied', v_customer, v_sequence;
        RETURN;
    END IF;
    RETURN QUERY SELECT 'applied', v_customer, NULL::bigint;
END;
$$;

-- Reports that could not be parsed, failed the form checks, or that the database refused, each kept whole as a
-- break (kind 'malformed' or 'refused') that claims nothing: 'break' for one kept now, 'duplicate' for one kept
-- before (by its exec_id, or its bytes) or whose exec_id is booked already. One row per report, in the order given.
CREATE FUNCTION record_malformed_reports(
    p_break_keys text[], p_kinds text[], p_exec_ids text[], p_order_ids text[], p_details text[], p_reports bytea[]
) RETURNS TABLE (ordinal integer, outcome text)
LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. cardinality(p_break_keys) LOOP
        IF p_exec_ids[i] IS NOT NULL AND (EXISTS (SELECT 1 FROM executions e WHERE e.exec_id = p_exec_ids[i])
                                          OR EXISTS (SELECT 1 FROM breaks k WHERE k.break_key = p_exec_ids[i])) THEN
            RETURN QUERY SELECT i, 'duplicate';
            CONTINUE;
        END IF;
        INSERT INTO breaks (break_key, exec_id, order_id, kind, detail, report_bytes)
        VALUES (p_break_keys[i], p_exec_ids[i], p_order_ids[i], p_kinds[i], p_details[i], p_reports[i])
        ON CONFLICT (break_key) DO NOTHING;
        RETURN QUERY SELECT i, CASE WHEN FOUND THEN 'break' ELSE 'duplicate' END;
    END LOOP;
END;
$$;
