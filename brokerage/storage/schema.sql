-- The brokerage's schema as it stands: every table and stored function once, with the reasoning beside it. The
-- versioned migrations beside this file are what a deployed database is built and changed with; a test proves that
-- they give exactly this (tests/integration/test_schema_snapshot.py), and the tests' template database is built from
-- it. A change is a new migration, and the same change made here. The design is DESIGN.md's: rules 1 to 10, "The
-- books"; the migrations' headers keep the measurements behind the choices.
--
-- Money and prices are numeric(20,4); quantities are whole shares. Every transaction about a customer locks that
-- customer's balances row first, so a customer's changes are serialised and never deadlock each other. The
-- functions the services call run with enable_seqscan = off (their plans are cached for the session: one planned
-- while a table looked empty must not stay a sequential scan once it is large); the helpers they call inherit it.

SET check_function_bodies = false;  -- SQL functions below name tables made further down

-- ---------------------------------------------------------------------------------------------------- reference

-- The shard count, fixed when the stream is created: a process configured with another refuses to start.
CREATE TABLE shard_config (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    shard_count integer NOT NULL CHECK (shard_count > 0),
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- The tradable universe and its reference prices: the demo seeds both, the workers' quote feed keeps the prices
-- fresh from the exchange.
CREATE TABLE instruments (
    symbol    text PRIMARY KEY,
    name      text NOT NULL,
    tradable  boolean NOT NULL DEFAULT true,  -- no longer read: a symbol's halt is a trading_halts row (0019)
    tick_size numeric(20,4) NOT NULL CHECK (tick_size > 0)
);

CREATE TABLE quotes (
    symbol    text PRIMARY KEY REFERENCES instruments,
    price     numeric(20,4) NOT NULL CHECK (price > 0),
    quoted_at timestamptz NOT NULL
);

-- --------------------------------------------------------------------------------------- customers' cash and shares

-- The fast truth the guarded updates work on (rule 1): a customer's cash available and reserved for open buys, and
-- the customer's next order and event sequences, taken under this row's lock (rule 3). Its accounts' transfers
-- prove it (the books, below).
CREATE TABLE balances (
    customer_id         text PRIMARY KEY,
    available           numeric(20,4) NOT NULL DEFAULT 0,
    reserved            numeric(20,4) NOT NULL DEFAULT 0,
    next_order_sequence bigint NOT NULL DEFAULT 1,
    next_event_sequence bigint NOT NULL DEFAULT 1,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    -- The risk controls' state of the customer, read and changed under this row's lock: the account's status, the
    -- day's gross accepted buy notional at the protection price (the credit threshold's measure, per America/New_York
    -- trading day), and the rate limit's GCRA theoretical arrival time.
    account_status      text NOT NULL DEFAULT 'ACTIVE' CHECK (account_status IN ('ACTIVE', 'CLOSING_ONLY', 'BLOCKED')),
    buy_notional_day    date,
    buy_notional        numeric(20,4) NOT NULL DEFAULT 0 CHECK (buy_notional >= 0),
    rate_tat            timestamptz,
    CHECK (available >= 0 AND reserved >= 0)
);

-- Amounts are exact; averages are derived from them, by this one rule (a position's average cost, an order's
-- average fill price).
CREATE FUNCTION average_price(p_notional numeric, p_quantity bigint) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_quantity > 0 THEN round(p_notional / p_quantity, 4) END
$$;

-- A customer's shares of one stock: all held (quantity) and those reserved for open sells, and the cost basis of
-- what is held, exact, that the average cost is derived from.
CREATE TABLE positions (
    customer_id  text NOT NULL REFERENCES balances,
    symbol       text NOT NULL REFERENCES instruments,
    quantity     bigint NOT NULL DEFAULT 0,
    reserved     bigint NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    cost_basis   numeric(20,4) NOT NULL DEFAULT 0,
    average_cost numeric(20,4) GENERATED ALWAYS AS (coalesce(average_price(cost_basis, quantity), 0)) STORED,
    PRIMARY KEY (customer_id, symbol),
    CHECK (reserved BETWEEN 0 AND quantity)
);

-- --------------------------------------------------------------------------------------------------- risk controls

-- DESIGN.md "Risk controls" (SEC Rule 15c3-5): what the placement transaction checks besides cash and shares, and
-- the audit of every change of it. Changed only through the operations service's functions (set_trading_halt, ...).

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

-- Whether a halt covers an order of this customer in this symbol.
CREATE FUNCTION halt_covers(p_halt trading_halts, p_customer_id text, p_symbol text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_halt.scope = 'FIRM' OR (p_halt.scope = 'SYMBOL' AND p_halt.symbol = p_symbol)
           OR (p_halt.scope = 'CUSTOMER' AND p_halt.customer_id = p_customer_id)
$$;

-- The halt in force over an order of this customer in this symbol, the widest first; null if none. PL/pgSQL, as every
-- helper placement calls for every order: it keeps its plan (0023).
CREATE FUNCTION halt_in_force(p_customer_id text, p_symbol text) RETURNS trading_halts
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

-- What a customer is told of a halt (the operator's reason stays in the audit).
CREATE FUNCTION halt_notice(p_halt trading_halts) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_halt.scope WHEN 'FIRM' THEN 'trading is halted'
                             WHEN 'SYMBOL' THEN format('trading in %s is halted', p_halt.symbol)
                             ELSE 'trading is halted for this account' END
$$;

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

-- A halt set with cancel_open_orders also cancels every order open in its scope when it was set (0021): a job per
-- shard, persisted so it survives a crash, worked by the shard's workers until nothing in scope is left open.
CREATE TABLE halt_cancel_jobs (
    halt_id     bigint NOT NULL REFERENCES trading_halts,
    shard       integer NOT NULL,
    canceled    integer NOT NULL DEFAULT 0,  -- orders canceled at once
    requested   integer NOT NULL DEFAULT 0,  -- cancels asked of the venue
    finished_at timestamptz,
    PRIMARY KEY (halt_id, shard)
);
CREATE INDEX halt_cancel_jobs_unfinished ON halt_cancel_jobs (shard) WHERE finished_at IS NULL;

-- The firm's credit threshold (0022): the gross notional of the buys accepted today, in counters spread over slots
-- (a connection writes its backend pid's), and a firm-wide halt engaged by itself once it reaches the operations
-- service's threshold (engage_firm_threshold_halt).
CREATE TABLE firm_buy_notional (
    day      date NOT NULL,
    slot     integer NOT NULL,
    notional numeric(20,4) NOT NULL DEFAULT 0 CHECK (notional >= 0),
    PRIMARY KEY (day, slot)
);

-- A customer's halt has its customer's shard to work; a symbol's or the firm's, every shard.
CREATE FUNCTION trading_halts_cancel_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_shards integer;
BEGIN
    SELECT shard_count INTO v_shards FROM shard_config;
    INSERT INTO halt_cancel_jobs (halt_id, shard)
    SELECT NEW.halt_id, s FROM generate_series(0, v_shards - 1) AS s
     WHERE NEW.customer_id IS NULL OR s = shard_of(NEW.customer_id, v_shards);
    RETURN NULL;
END;
$$;
CREATE TRIGGER trading_halts_cancel_jobs AFTER INSERT ON trading_halts
    FOR EACH ROW WHEN (NEW.cancel_open_orders) EXECUTE FUNCTION trading_halts_cancel_jobs();

-- ----------------------------------------------------------------------------------------------------------- orders

-- The trades table. A market order is a DAY order (rule 10); its status only moves forward (order_transitions,
-- below). The columns read in the order migrations added them.
CREATE TABLE orders (
    order_id             text PRIMARY KEY,  -- a ULID: sorts by creation time
    client_order_id      text NOT NULL,     -- the client's idempotency key (rule 2)
    customer_id          text NOT NULL REFERENCES balances,
    sequence             bigint NOT NULL,   -- the customer's order sequence, in commit order (rule 3)
    symbol               text NOT NULL REFERENCES instruments,
    side                 text NOT NULL CHECK (side IN ('BUY', 'SELL')),
    quantity             bigint NOT NULL CHECK (quantity > 0),
    protection_price     numeric(20,4) CHECK (protection_price > 0),  -- null when rejected before pricing
    reserved_cash        numeric(20,4) NOT NULL DEFAULT 0 CHECK (reserved_cash >= 0),  -- still held, buys
    reserved_shares      bigint NOT NULL DEFAULT 0 CHECK (reserved_shares >= 0),       -- still held, sells
    filled_quantity      bigint NOT NULL DEFAULT 0,
    status               text NOT NULL CHECK (status IN
                             ('PLACED', 'SUBMITTED', 'PARTIALLY_FILLED', 'FILLED', 'REJECTED', 'CANCELED')),
    status_reason        text NOT NULL DEFAULT '',
    claimed_at           timestamptz,       -- a worker has taken it to the exchange (rule 6)
    cancel_requested_at  timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    shard                integer NOT NULL,  -- derived from the customer (orders_assign_shard), never supplied
    venue_order_id       text,
    swept_at             timestamptz,       -- the sweeper last re-drove it (republished, or asked the exchange)
    sweep_count          integer NOT NULL DEFAULT 0,  -- makes each republish's message id new
    -- The exchange's last word: its final cumulative quantity and the status it ended in. The status follows only
    -- once the booked quantity reaches it, because reports arrive out of order.
    venue_final_quantity bigint CHECK (venue_final_quantity >= 0),
    venue_final_status   text CHECK (venue_final_status IN ('FILLED', 'CANCELED', 'REJECTED')),
    cancel_sent_at       timestamptz,       -- a worker asked the exchange to cancel
    cancel_swept_at      timestamptz,       -- the sweeper last re-drove the cancel's message
    filled_notional      numeric(20,4) NOT NULL DEFAULT 0,  -- exact: the sum of its fills' quantity x price
    average_fill_price   numeric(20,4) GENERATED ALWAYS AS (average_price(filled_notional, filled_quantity)) STORED,
    expires_at           timestamptz,       -- a DAY order's session close; null: the market never closes
    -- Rule 7, the retry state of a send that failed: here, never in a message's delivery count.
    submit_attempts      integer NOT NULL DEFAULT 0,  -- sends that failed, their backoff doubling with them
    unknown_outcomes     integer NOT NULL DEFAULT 0,  -- of them, those the venue could not account for
    retry_at             timestamptz,       -- backing off: not sent again before this
    parked_at            timestamptz,       -- given up on after its attempts: a break, its reservation held
    held_by              text,              -- waits behind this order of its customer (the one that holds: itself)
    last_submit_error    text,
    tombstoned_at        timestamptz,       -- ended here after the venue said it never received it (rule 9)
    -- Why it was rejected, as data (the proto's RejectCode): set exactly when REJECTED; orders_name_reject_code names
    -- the venue's.
    reject_code          text CHECK (reject_code IN (
                             'TRADING_HALTED', 'ACCOUNT_BLOCKED', 'ACCOUNT_CLOSING_ONLY', 'QUANTITY_LIMIT',
                             'MARKET_CLOSED', 'NO_QUOTE', 'STALE_QUOTE', 'NOTIONAL_LIMIT', 'DAILY_NOTIONAL_LIMIT',
                             'INSUFFICIENT_BUYING_POWER', 'INSUFFICIENT_SHARES', 'EXCHANGE_REJECTED')),
    claims               integer NOT NULL DEFAULT 0,  -- claims of it: one means no earlier send can have been made
    cancel_reason        text,              -- why a cancel was asked, when not by the customer (a halt's)
    UNIQUE (customer_id, client_order_id),
    UNIQUE (customer_id, sequence),         -- also serves ListOrders, newest first
    CHECK (filled_quantity BETWEEN 0 AND quantity),
    -- a terminal order holds nothing
    CHECK (status NOT IN ('FILLED', 'REJECTED', 'CANCELED') OR (reserved_cash = 0 AND reserved_shares = 0)),
    -- The reservation is structural: an open buy holds at least its unfilled rest at its protection price (a fill
    -- never costs more: the venue never fills beyond it, and one that did is the error account's), an open sell
    -- exactly its unfilled shares.
    CONSTRAINT orders_reservation_covers_rest CHECK (
        status IN ('FILLED', 'REJECTED', 'CANCELED')
        OR (side = 'BUY' AND reserved_shares = 0 AND protection_price IS NOT NULL
            AND reserved_cash >= (quantity - filled_quantity) * protection_price)
        OR (side = 'SELL' AND reserved_cash = 0 AND reserved_shares = quantity - filled_quantity)),
    CONSTRAINT orders_rejected_have_a_code CHECK ((status = 'REJECTED') = (reject_code IS NOT NULL))
);
CREATE INDEX orders_customer_side ON orders (customer_id, side);
CREATE INDEX orders_customer_created ON orders (customer_id, created_at);
-- The orders at the exchange, which the sweeper's silent-order question reads.
CREATE INDEX orders_at_the_exchange ON orders (status, updated_at) WHERE status IN ('SUBMITTED', 'PARTIALLY_FILLED');
-- The waiting orders a claim may take, by shard (the claim's search, the sweeper, the shard board) and by customer
-- (a claim of one customer's): a held customer's leave them, so the search passes over it by index (rule 7). The
-- shard index's predicate names the shard so that only statements picking shards can use it (0011).
CREATE INDEX orders_placed_by_shard ON orders (shard, created_at)
 WHERE status = 'PLACED' AND shard IS NOT NULL AND held_by IS NULL;
CREATE INDEX orders_placed_by_customer ON orders (customer_id, sequence) WHERE status = 'PLACED' AND held_by IS NULL;
-- The held ones, few, by customer: a claim asks of each customer it picks whether it is held, and the sweeper reads
-- them all for due retries and expiries.
CREATE INDEX orders_held_by_customer ON orders (customer_id, sequence) WHERE status = 'PLACED' AND held_by IS NOT NULL;
-- Cancels the customer asked for that no worker has sent yet, for the sweeper.
CREATE INDEX orders_cancel_unsent ON orders (cancel_requested_at)
 WHERE cancel_requested_at IS NOT NULL AND cancel_sent_at IS NULL;

-- The order state machine as data: the same table as brokerage.domain.orders.ALLOWED_TRANSITIONS (a test holds the
-- two together). Every status change goes through order_can_move, and the trigger orders_move_forward refuses any
-- change of status, the functions' or anyone's, that the table does not allow: the state machine has one source.
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

-- A paused shard sends nothing to the exchange, whichever replica of whichever cluster holds it.
CREATE TABLE paused_shards (
    shard     integer PRIMARY KEY CHECK (shard >= 0),
    reason    text NOT NULL,
    paused_at timestamptz NOT NULL DEFAULT now(),
    paused_by text  -- the operator, as their token names them (0016); none for a pause from before
);

-- ------------------------------------------------------------------------------------------- settlement's records

-- Every execution report booked to a customer, of every type: the dedupe of at-least-once callbacks (rule 7). Fills
-- carry a quantity and a price; the others record the exchange's word (accepted, canceled, rejected) with its
-- cumulative quantity. Append-only, written by settlement with its order and customer locked: no foreign key, whose
-- check would prove nothing new on every report (0007).
CREATE TABLE executions (
    exec_id             text PRIMARY KEY,
    order_id            text NOT NULL,
    venue_order_id      text NOT NULL DEFAULT '',
    quantity            bigint NOT NULL,
    price               numeric(20,4) CHECK (price > 0),
    executed_at         timestamptz NOT NULL,
    booked_at           timestamptz NOT NULL DEFAULT now(),
    exec_type           text NOT NULL DEFAULT 'FILL'
                            CHECK (exec_type IN ('NEW', 'PARTIAL_FILL', 'FILL', 'CANCELED', 'REJECTED')),
    cumulative_quantity bigint NOT NULL DEFAULT 0,
    reason              text NOT NULL DEFAULT '',
    CHECK ((exec_type IN ('PARTIAL_FILL', 'FILL')) = (quantity > 0 AND price IS NOT NULL)),
    CHECK (quantity >= 0)
);
CREATE INDEX executions_order ON executions (order_id);

-- Reports that cannot be applied, kept for an operator (rule 7), once each under its key: an impossible report
-- (well-formed, but no order of events explains it) under its exec_id, which it claims, so a copy of it is a
-- duplicate; a malformed one (it could not be parsed, or failed the form checks: 'malformed'; or the database
-- refused it: 'refused') whole, as its bytes, under 'malformed:' and its exec_id, else the SHA-256 of its bytes. A
-- malformed report's break claims nothing: a later well-formed copy is booked, and resolves it as superseded. A real
-- fill among the impossible reports is booked between the clearing and error accounts. A parked order's break is the
-- order's ('parked'). An operator resolves each with brokerctl; what was done, by whom and why stay on the row.
CREATE TABLE breaks (
    break_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    exec_id         text,
    order_id        text,
    kind            text NOT NULL,
    detail          text NOT NULL,
    report          jsonb,            -- a well-formed report, as an operator reads it (report_document)
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    break_key       text NOT NULL UNIQUE,
    report_bytes    bytea,            -- a malformed or refused report, as it came
    resolution      text CHECK (resolution IN ('superseded', 'accepted_venue', 'written_off', 'expired', 'redriven')),
    resolved_by     text,
    resolution_note text NOT NULL DEFAULT '',
    CONSTRAINT breaks_resolved CHECK ((resolved_at IS NULL) = (resolution IS NULL))
);
CREATE INDEX breaks_open ON breaks (recorded_at) WHERE resolved_at IS NULL;
CREATE INDEX breaks_malformed_open ON breaks (exec_id) WHERE kind IN ('malformed', 'refused') AND resolved_at IS NULL;

-- ------------------------------------------------------------------------------------------------------- the books

-- The books in double entry (DESIGN.md "The books"): every movement of cash or shares is one transfer between two
-- accounts (TigerBeetle's model), append-only, under a deterministic unique key, so that money can only come from an
-- account that reconciliation checks against a source outside this database: funding against its audited record,
-- clearing against the venue's drop copy, the error account against its break.
--
-- An account is (owner, name, asset): a customer's 'available' and 'reserved' of each asset (cash 'USD', or the
-- shares of a symbol, where available means free to sell), and the firm's 'clearing' (with the venue), 'funding' and
-- 'error' (real fills that cannot go to a customer) of each asset. A transfer names its asset once, so both its
-- accounts are of that asset by construction, and its customer once, so no transfer moves between two customers (none
-- may need a cross-customer transaction). Firm accounts keep no running balance, which would be a hot row serialising
-- all settlement: their balances are sums. The customers' are the balances and positions rows, which reconciliation
-- proves against their transfers.

-- Every credit of an asset from outside (a deposit; the demo's opening balances), with who booked it and why.
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

-- A holding of one stock as its fills build it: a buy adds its shares and their cost to the cost basis, a sell takes
-- its shares and their share of the basis (rounded to the books' four decimals; all of it with the last share).
-- Settlement moves positions with it, and reconciliation folds a customer's fills with it, in booking order, to prove
-- the position's quantity and cost basis.
CREATE TYPE holding AS (quantity bigint, cost_basis numeric);

-- ---------------------------------------------------------------------------------------------- events, messages

-- Every change of every order, written by the transaction that made it, with the customer's event sequence:
-- WatchOrders replays from here. Append-only (as executions).
CREATE TABLE order_events (
    customer_id        text NOT NULL,
    sequence           bigint NOT NULL,  -- per customer, from balances.next_event_sequence
    order_id           text NOT NULL,
    event_type         text NOT NULL,
    status             text NOT NULL,
    status_reason      text NOT NULL DEFAULT '',
    filled_quantity    bigint NOT NULL DEFAULT 0,
    occurred_at        timestamptz NOT NULL DEFAULT now(),
    average_fill_price numeric(20,4),
    cancel_requested   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (customer_id, sequence)
);

-- Messages committed with the change that caused them (rule 4); the relay publishes them and takes them out in the
-- transaction that saw JetStream acknowledge them. Their kind (OrderPlaced, CancelRequested) travels as a header.
CREATE TABLE outbox (
    message_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dedupe_id    text NOT NULL,  -- Nats-Msg-Id
    subject      text NOT NULL,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    message_type text NOT NULL DEFAULT 'OrderPlaced'
);

-- The post-trade feed's outbox (0020): every booked fill, relayed by CallbackService to the stream EXECUTIONS
-- (executions.<shard>, Nats-Msg-Id = exec_id), apart from the orders' outbox so a feed that cannot publish never holds
-- up orders. The message is JSON, money as decimal strings (docs/executions-feed.md).
CREATE TABLE execution_feed (
    feed_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    exec_id    text NOT NULL,   -- Nats-Msg-Id
    subject    text NOT NULL,
    payload    bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A fill booked (an executions row with shares): its feed message, in the booking transaction, whichever path
-- booked it (a callback, or a drop copy's report through a repair).
CREATE FUNCTION executions_feed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_order orders;
BEGIN
    SELECT * INTO v_order FROM orders WHERE order_id = NEW.order_id;
    INSERT INTO execution_feed (exec_id, subject, payload)
    VALUES (NEW.exec_id, 'executions.' || v_order.shard, convert_to(jsonb_build_object(
        'exec_id', NEW.exec_id,
        'order_id', NEW.order_id,
        'venue_order_id', NEW.venue_order_id,
        'customer_id', v_order.customer_id,
        'symbol', v_order.symbol,
        'side', v_order.side,
        'quantity', NEW.quantity,
        'price', NEW.price::text,
        'cumulative_quantity', NEW.cumulative_quantity,
        'exec_type', NEW.exec_type,
        'executed_at', NEW.executed_at,
        'booked_at', NEW.booked_at,
        'shard', v_order.shard)::text, 'UTF8'));
    RETURN NULL;
END;
$$;
CREATE TRIGGER executions_feed AFTER INSERT ON executions
    FOR EACH ROW WHEN (NEW.quantity > 0) EXECUTE FUNCTION executions_feed();

-- ---------------------------------------------------------------------------------------------------- superseded

-- The single-entry ledger the books replaced (0012): frozen, its history migrated into transfers, kept while the
-- previous release's reconciliation may still read it; a contract step drops it.
CREATE TABLE ledger_entries (
    entry_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id     text NOT NULL,
    asset           text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('funding', 'reserve', 'release', 'fill')),
    available_delta numeric(20,4) NOT NULL DEFAULT 0,
    reserved_delta  numeric(20,4) NOT NULL DEFAULT 0,
    order_id        text,
    exec_id         text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (available_delta <> 0 OR reserved_delta <> 0)
);
CREATE INDEX ledger_entries_order ON ledger_entries (order_id) WHERE order_id IS NOT NULL;

-- ------------------------------------------------------------------------------------------ orders and their state

-- Every status change goes through this helper, which asks the domain's table (0004): the state machine has one
-- source. The functions decide with it; the trigger refuses any change of status, theirs or anyone's, that it does
-- not allow. PL/pgSQL, which keeps the query's plan (0015): as a SQL function that cannot be inlined (it reads a
-- table) it was planned again at every call, twice per fill.
CREATE FUNCTION order_can_move(p_from text, p_to text) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM order_transitions WHERE from_status = p_from AND to_status = p_to);
END;
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

-- The venue's rejections (reported, or answered to a send) are the only ones that name no code of their own.
CREATE FUNCTION orders_name_reject_code() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.reject_code := 'EXCHANGE_REJECTED';
    RETURN NEW;
END;
$$;
CREATE TRIGGER orders_name_reject_code BEFORE UPDATE OF status ON orders
    FOR EACH ROW WHEN (NEW.status = 'REJECTED' AND NEW.reject_code IS NULL) EXECUTE FUNCTION orders_name_reject_code();

-- The shard that owns a customer: the first 8 bytes of SHA-256 of the customer id, read as an unsigned
-- big-endian integer (bigint is signed: adding 2^64 modulo 2^64 reads it unsigned), modulo the shard count.
-- The same rule as brokerage.domain.sharding.shard_for (a test holds the two together).
CREATE FUNCTION shard_of(p_customer_id text, p_shard_count integer) RETURNS integer
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    RETURN (((('x' || encode(substring(sha256(convert_to(p_customer_id, 'UTF8')) FROM 1 FOR 8), 'hex'))
              ::bit(64)::bigint::numeric + 18446744073709551616) % 18446744073709551616) % p_shard_count)::integer;
END;
$$;

-- The shard is derived from the customer, never supplied, so no caller can file an order under another shard.
-- shard_config is read by its key: inside place_order (SET enable_seqscan = off) an unkeyed read is costed at
-- 1e10, above jit_above_cost, and PostgreSQL JIT-compiled it on every placement (about 7 ms of CPU per order).
CREATE FUNCTION orders_assign_shard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.shard := shard_of(NEW.customer_id, (SELECT shard_count FROM shard_config WHERE singleton));
    RETURN NEW;
END;
$$;
CREATE TRIGGER orders_assign_shard BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION orders_assign_shard();

-- Money in messages people read: at least two decimals, no trailing zeros beyond them (as Python's
-- brokerage.domain.money.format_decimal).
CREATE FUNCTION format_money(p_amount numeric) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN scale(trim_scale(p_amount)) <= 2 THEN round(p_amount, 2)::text
                ELSE trim_scale(p_amount)::text END
$$;

CREATE FUNCTION append_order_event(p_order orders, p_event_type text) RETURNS void
LANGUAGE plpgsql AS $$
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

-- ------------------------------------------------------------------------------------------------------- the books

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

-- ------------------------------------------------------------------------------------------- placement and cancels

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

-- Group commit of placements: one row per order, in the order given; a row of nulls for an unknown customer, and
-- only retry_after for one past its rate limit. The batch's accepted buy notional goes to the firm's day counter, as
-- its last write (0022).
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
DECLARE
    v_placed  record;
    v_bought  numeric := 0;
BEGIN
    FOR i IN 1 .. cardinality(p_order_ids) LOOP
        SELECT * INTO v_placed FROM place_order_v3(
            p_order_ids[i], p_customer_ids[i], p_client_order_ids[i], p_symbols[i], p_sides[i], p_quantities[i],
            p_protection_prices[i], p_reference_prices[i], p_reject_codes[i], p_reject_reasons[i], p_subjects[i],
            p_payloads[i], p_expires_ats[i]);
        IF (v_placed.o_order).order_id = p_order_ids[i] AND (v_placed.o_order).status = 'PLACED'
           AND (v_placed.o_order).side = 'BUY' THEN
            v_bought := v_bought + (v_placed.o_order).quantity * (v_placed.o_order).protection_price;
        END IF;
        placed := v_placed.o_order;
        retry_after := v_placed.o_retry_after;
        RETURN NEXT;
    END LOOP;
    IF v_bought > 0 THEN
        INSERT INTO firm_buy_notional AS f (day, slot, notional)
        VALUES ((now() AT TIME ZONE 'America/New_York')::date, pg_backend_pid() % 16, v_bought)
        ON CONFLICT (day, slot) DO UPDATE SET notional = f.notional + EXCLUDED.notional;
    END IF;
END;
$$;

-- The previous release's placement, through the checks above: its reason names the code; a sell's notional is taken
-- at its protection price (it passes no reference price); past the rate limit it is refused as a transient error
-- (class 53), which its caller answers UNAVAILABLE and retries.
CREATE FUNCTION place_order_v2(
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
LANGUAGE sql SET enable_seqscan = off AS $$
    SELECT * FROM place_orders_v2(p_order_ids, p_customer_ids, p_client_order_ids, p_symbols, p_sides, p_quantities,
                                  p_protection_prices, p_reject_reasons, p_subjects, p_payloads,
                                  array_fill(NULL::timestamptz, ARRAY[cardinality(p_order_ids)]))
$$;

-- Cancels an order no worker has claimed (rule 6) and releases what it holds. Returns the order as it now
-- stands (canceled, or untouched when it could not be), or nothing when the customer has no such order.
CREATE FUNCTION cancel_placed_order(p_customer_id text, p_order_id text) RETURNS SETOF orders
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

-- ---------------------------------------------------------------------------------------------------- to the venue

-- Locks the customer for this transaction if no other transaction holds the lock; false if one does.
CREATE FUNCTION lock_customer_unless_busy(p_customer_id text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM balances WHERE customer_id = p_customer_id FOR UPDATE SKIP LOCKED;
    RETURN FOUND;
END;
$$;

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

-- Ends a waiting order that never reached the venue as CANCELED with the reason, its reservation released.
CREATE FUNCTION cancel_unsent(p_order orders, p_reason text) RETURNS orders
LANGUAGE plpgsql AS $$
DECLARE
    v_order orders;
BEGIN
    PERFORM release_reservation(p_order);
    UPDATE orders SET status = 'CANCELED', status_reason = p_reason, reserved_cash = 0, reserved_shares = 0,
                      updated_at = now()
     WHERE order_id = p_order.order_id
    RETURNING * INTO v_order;
    PERFORM append_order_event(v_order, 'canceled');
    RETURN v_order;
END;
$$;

-- How a halt ends an order that never left: canceled when the halt cancels the orders open when it was set and the
-- order was one of them, else REJECTED TRADING_HALTED (0019).
CREATE FUNCTION end_halted_unsent(p_order orders, p_halt trading_halts) RETURNS orders
LANGUAGE plpgsql AS $$
BEGIN
    IF p_halt.cancel_open_orders AND p_order.created_at <= p_halt.set_at THEN
        RETURN cancel_unsent(p_order, 'canceled: trading halted');
    END IF;
    RETURN reject_unsent(p_order, 'TRADING_HALTED', halt_notice(p_halt));
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
CREATE FUNCTION reject_halted_waiting(p_customer_id text, p_through bigint) RETURNS bigint
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

-- As 0013's, now counting claims and passing the customer's waiting orders through reject_halted_waiting first.
CREATE FUNCTION claim_for_submission(p_order_id text, p_batch_max integer) RETURNS SETOF orders
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

CREATE FUNCTION claim_for_submissions(p_order_ids text[], p_batch_maxes integer[])
RETURNS TABLE (ordinal integer, claimed orders)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
BEGIN
    FOR i IN 1 .. cardinality(p_order_ids) LOOP
        RETURN QUERY SELECT i, c FROM claim_for_submission(p_order_ids[i], p_batch_maxes[i]) AS c;
    END LOOP;
END;
$$;

-- The worker's check just before it sends claimed orders: each under a halt in force is kept from the venue and
-- stopped (stop_halted, the worker's own claim its only one: 'rejected', 'canceled' or 'cancel_requested'). Returns
-- those it kept back; the worker sends the rest, and takes each cancel request to the venue at once.
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
        CONTINUE WHEN v_order.status <> 'PLACED' OR v_order.cancel_requested_at IS NOT NULL;
        RETURN QUERY SELECT v_order.order_id, stop_halted(v_order, v_halt, 1);
    END LOOP;
END;
$$;

-- Works the unfinished halt cancel jobs of these shards: their orders open when each halt was set, at most p_limit,
-- taken across the jobs in one lock order (by customer), each under its customer's lock: one no worker took canceled
-- at once, any other asked of the venue (the caller publishes the requests; the sweeper re-drives any whose message is
-- lost). Returns them; a job with nothing left in scope finishes.
CREATE FUNCTION cancel_for_halts(p_shards integer[], p_limit integer)
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

-- As in 0011: SUBMITTED, unless a report already moved the order further, which it keeps; the venue's id is kept
-- either way. The order as it now stands; null if unknown.
CREATE FUNCTION record_submitted(p_order_id text, p_venue_order_id text) RETURNS orders
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

-- The caller passes each call's customer (its lock order), so the probe needs no read of the order.
CREATE FUNCTION record_submissions(p_order_ids text[], p_venue_order_ids text[], p_customer_ids text[],
                                   p_wait boolean)
RETURNS TABLE (ordinal integer, busy boolean, recorded orders)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
BEGIN
    FOR i IN 1 .. cardinality(p_order_ids) LOOP
        IF p_wait OR lock_customer_unless_busy(p_customer_ids[i]) THEN
            RETURN QUERY SELECT i, false, record_submitted(p_order_ids[i], p_venue_order_ids[i]);
        ELSE
            RETURN QUERY SELECT i, true, NULL::orders;
        END IF;
    END LOOP;
END;
$$;

-- The exchange refused the order: REJECTED with its reason and the reservation released, unless it already
-- filled or ended. Returns the order as it now stands; null if unknown.
CREATE FUNCTION record_venue_rejection(p_order_id text, p_reason text) RETURNS orders
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

CREATE FUNCTION record_venue_rejections(p_order_ids text[], p_reasons text[], p_customer_ids text[], p_wait boolean)
RETURNS TABLE (ordinal integer, busy boolean, recorded orders)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
BEGIN
    FOR i IN 1 .. cardinality(p_order_ids) LOOP
        IF p_wait OR lock_customer_unless_busy(p_customer_ids[i]) THEN
            RETURN QUERY SELECT i, false, record_venue_rejection(p_order_ids[i], p_reasons[i]);
        ELSE
            RETURN QUERY SELECT i, true, NULL::orders;
        END IF;
    END LOOP;
END;
$$;

-- The orders an order still waiting behind holds back: lifted when it stops waiting, and a break that parked it is
-- superseded by what became of it (an operator's resolution, or its expiry, closes it first).
CREATE FUNCTION orders_release_holds() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE orders SET held_by = NULL
     WHERE customer_id = NEW.customer_id AND status = 'PLACED' AND held_by = NEW.order_id;
    UPDATE breaks SET resolved_at = now(), resolution = 'superseded', resolved_by = 'settlement',
                      resolution_note = format('the order became %s', NEW.status)
     WHERE order_id = NEW.order_id AND kind = 'parked' AND resolved_at IS NULL;
    RETURN NULL;
END;
$$;
CREATE TRIGGER orders_release_holds AFTER UPDATE OF status ON orders
    FOR EACH ROW WHEN (OLD.status = 'PLACED' AND NEW.status <> 'PLACED' AND OLD.held_by = OLD.order_id)
    EXECUTE FUNCTION orders_release_holds();

-- Lifts the customer's hold if the retry of the order that holds it has come due.
CREATE FUNCTION lift_due_hold(p_customer_id text) RETURNS void
LANGUAGE sql AS $$
    UPDATE orders SET held_by = NULL, retry_at = NULL
     WHERE customer_id = p_customer_id AND status = 'PLACED'
       AND held_by = (SELECT h.order_id FROM orders h
                       WHERE h.customer_id = p_customer_id AND h.status = 'PLACED' AND h.held_by = h.order_id
                         AND h.retry_at <= now() AND h.parked_at IS NULL)
$$;

-- Whether the customer is held; if so, its waiting orders placed since the hold began are marked to wait too.
CREATE FUNCTION mark_if_held(p_customer_id text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_head text;
BEGIN
    SELECT held_by INTO v_head FROM orders
     WHERE customer_id = p_customer_id AND status = 'PLACED' AND held_by IS NOT NULL
     ORDER BY sequence LIMIT 1;
    IF v_head IS NULL THEN
        RETURN false;
    END IF;
    UPDATE orders SET held_by = v_head WHERE customer_id = p_customer_id AND status = 'PLACED' AND held_by IS NULL;
    RETURN true;
END;
$$;

-- A send that failed (rule 7): the venue's error was transient, or the outcome unknown (p_unknown) and the venue could
-- not say. The order backs off until p_retry_at, or with p_park is parked as a break with its reservation held; either
-- way it holds back its customer's later orders. Only an order still waiting: a late word (a second holder's, or one
-- whose order the venue has since acknowledged) changes nothing. The caller decides by its policy.
CREATE FUNCTION record_submit_failure(p_order_id text, p_error text, p_unknown boolean, p_retry_at timestamptz,
                                      p_park boolean)
RETURNS orders
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
    IF v_order.status <> 'PLACED' OR v_order.parked_at IS NOT NULL THEN
        RETURN v_order;
    END IF;
    UPDATE orders SET submit_attempts = submit_attempts + 1, last_submit_error = p_error,
                      unknown_outcomes = unknown_outcomes + CASE WHEN p_unknown THEN 1 ELSE 0 END,
                      retry_at = CASE WHEN p_park THEN NULL ELSE p_retry_at END,
                      parked_at = CASE WHEN p_park THEN now() END, held_by = order_id
     WHERE order_id = p_order_id
    RETURNING * INTO v_order;
    UPDATE orders SET held_by = p_order_id
     WHERE customer_id = v_order.customer_id AND status = 'PLACED' AND sequence > v_order.sequence
       AND held_by IS NULL;
    IF p_park THEN
        INSERT INTO breaks (break_key, order_id, kind, detail)
        VALUES (p_order_id || ':parked:' || v_order.submit_attempts, p_order_id, 'parked',
                format('not sent: its outcome unknown %s times; the last: %s', v_order.unknown_outcomes, p_error))
        ON CONFLICT (break_key) DO NOTHING;
    END IF;
    RETURN v_order;
END;
$$;

-- Ends an order that never reached the venue, because the venue said so (rule 9: asked to cancel it, it answered that
-- it never received it, and keeps a tombstone that refuses it today): CANCELED with the reason, its reservation
-- released, any break that parked it closed (by an expiry: as expired). Only an order still waiting (with
-- p_unclaimed_only, still unclaimed: a claim made meanwhile sends it). Returns the order it ended, null if none.
CREATE FUNCTION end_unsent_order(p_order_id text, p_reason text, p_unclaimed_only boolean) RETURNS orders
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
    IF v_order.status <> 'PLACED' OR NOT order_can_move(v_order.status, 'CANCELED')
       OR (p_unclaimed_only AND v_order.claimed_at IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    UPDATE breaks SET resolved_at = now(), resolution = 'expired', resolved_by = 'expiry', resolution_note = p_reason
     WHERE order_id = p_order_id AND kind = 'parked' AND resolved_at IS NULL AND p_reason LIKE 'expired%';
    PERFORM release_reservation(v_order);
    UPDATE orders SET status = 'CANCELED', status_reason = p_reason, reserved_cash = 0, reserved_shares = 0,
                      tombstoned_at = CASE WHEN claimed_at IS NOT NULL THEN now() END, updated_at = now()
     WHERE order_id = p_order_id
    RETURNING * INTO v_order;
    PERFORM append_order_event(v_order, 'canceled');
    RETURN v_order;
END;
$$;

-- Rule 10: the orders of these shards still waiting unclaimed at their expiry, CANCELED as expired and released,
-- customer by customer (each under its lock); returns those this call ended. At most p_limit at a time.
CREATE FUNCTION expire_unclaimed_orders(p_shards integer[], p_reason text, p_limit integer) RETURNS SETOF orders
LANGUAGE plpgsql AS $$
DECLARE
    v_order_id text;
    v_ended    orders;
BEGIN
    FOR v_order_id IN
        SELECT e.order_id FROM (
            (SELECT o.order_id, o.customer_id FROM orders o
              WHERE o.shard = ANY(p_shards) AND o.status = 'PLACED' AND o.held_by IS NULL
                AND o.claimed_at IS NULL AND o.expires_at <= now()
              LIMIT p_limit)
            UNION ALL
            (SELECT o.order_id, o.customer_id FROM orders o
              WHERE o.shard = ANY(p_shards) AND o.status = 'PLACED' AND o.held_by IS NOT NULL
                AND o.claimed_at IS NULL AND o.expires_at <= now()
              LIMIT p_limit)
        ) AS e
        ORDER BY e.customer_id, e.order_id
        LIMIT p_limit
    LOOP
        v_ended := end_unsent_order(v_order_id, p_reason, true);
        IF v_ended.order_id IS NOT NULL THEN
            RETURN NEXT v_ended;
        END IF;
    END LOOP;
END;
$$;

-- ------------------------------------------------------------------------------------------------------ settlement

-- A report must be about the order as we sent it: null when it is, else why not. An empty symbol or side, or a
-- zero order quantity, is a field the report left out.
CREATE FUNCTION report_mismatch(p_order orders, p_symbol text, p_side text, p_order_quantity bigint) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_symbol NOT IN ('', p_order.symbol) OR p_side NOT IN ('', p_order.side)
       OR p_order_quantity NOT IN (0, p_order.quantity) THEN
        RETURN format('mismatch: the report is for %s %s %s, the order is %s %s %s',
                      p_side, p_order_quantity, p_symbol, p_order.side, p_order.quantity, p_order.symbol);
    END IF;
    RETURN NULL;
END;
$$;

-- The report as an operator reads it in a break.
CREATE FUNCTION report_document(
    p_exec_id text, p_order_id text, p_venue_order_id text, p_exec_type text, p_last_quantity bigint,
    p_last_price numeric, p_cumulative_quantity bigint, p_reason text, p_transact_time timestamptz,
    p_symbol text, p_side text, p_order_quantity bigint
) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'exec_id', p_exec_id, 'order_id', p_order_id, 'venue_order_id', p_venue_order_id,
        'exec_type', p_exec_type, 'last_quantity', p_last_quantity, 'last_price', coalesce(format_money(p_last_price), ''),
        'cumulative_quantity', p_cumulative_quantity, 'reason', p_reason, 'transact_time', p_transact_time,
        'symbol', p_symbol, 'side', p_side, 'order_quantity', p_order_quantity)
$$;

-- Why a report cannot be applied to the order as it stands, or null when it can (as in 0004, its form aside: the
-- form of a report is checked before it gets here, and a malformed one is a break of its own).
CREATE FUNCTION settlement_break(p_order orders, p_exec_type text, p_last_quantity bigint,
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

-- A well-formed copy of a report resolves what a malformed copy of it left. Asked for every report: PL/pgSQL, which
-- keeps the update's plan (0015), not a SQL function planned again at every call. It takes turns with a malformed
-- copy being kept (record_malformed_reports) by a transaction lock on the exec_id (0018): whichever commits second
-- sees the other, so no break stays open for a booked execution.
CREATE FUNCTION supersede_malformed(p_exec_id text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('report:' || p_exec_id, 0));
    UPDATE breaks SET resolved_at = now(), resolution = 'superseded', resolved_by = 'settlement',
                      resolution_note = 'a well-formed copy of the report arrived'
     WHERE exec_id = p_exec_id AND kind IN ('malformed', 'refused') AND resolved_at IS NULL;
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

-- As in 0007, and with p_wait false a report whose customer is busy is answered 'busy' and not applied. The
-- exchange's acknowledgement of an order no longer PLACED (when the statement began) takes no lock to apply, so it
-- is never busy.
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
    p_symbols text[],
    p_sides text[],
    p_order_quantities bigint[],
    p_wait boolean
) RETURNS TABLE (ordinal integer, outcome text, customer_id text, events_through bigint)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_next record;
    v_result record;
BEGIN
    FOR v_next IN
        SELECT r.i::integer AS i, o.customer_id, o.status FROM unnest(p_order_ids) WITH ORDINALITY AS r (order_id, i)
          LEFT JOIN orders o USING (order_id)
         ORDER BY o.customer_id NULLS FIRST, r.i
    LOOP
        IF NOT p_wait AND v_next.customer_id IS NOT NULL
           AND (p_exec_types[v_next.i] <> 'NEW' OR v_next.status = 'PLACED')
           AND NOT lock_customer_unless_busy(v_next.customer_id) THEN
            RETURN QUERY SELECT v_next.i, 'busy', v_next.customer_id, NULL::bigint;
            CONTINUE;
        END IF;
        SELECT * INTO v_result FROM apply_execution_report(
            p_exec_ids[v_next.i], p_order_ids[v_next.i], p_venue_order_ids[v_next.i], p_exec_types[v_next.i],
            p_last_quantities[v_next.i], p_last_prices[v_next.i], p_cumulative_quantities[v_next.i],
            p_reasons[v_next.i], p_transact_times[v_next.i], p_symbols[v_next.i], p_sides[v_next.i],
            p_order_quantities[v_next.i]);
        RETURN QUERY SELECT v_next.i, v_result.outcome, v_result.customer_id, v_result.events_through;
    END LOOP;
END;
$$;

-- Reports that could not be parsed, failed the form checks, or that the database refused, each kept whole as a
-- break (kind 'malformed' or 'refused') that claims nothing: 'break' for one kept now, 'duplicate' for one kept
-- before (by its exec_id, or its bytes) or whose exec_id is booked already. One row per report, in the order given.
-- A report with an exec_id takes its turn with a good copy being booked (supersede_malformed's lock, 0018).
CREATE FUNCTION record_malformed_reports(
    p_break_keys text[], p_kinds text[], p_exec_ids text[], p_order_ids text[], p_details text[], p_reports bytea[]
) RETURNS TABLE (ordinal integer, outcome text)
LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. cardinality(p_break_keys) LOOP
        IF p_exec_ids[i] IS NOT NULL THEN
            PERFORM pg_advisory_xact_lock(hashtextextended('report:' || p_exec_ids[i], 0));
            IF EXISTS (SELECT 1 FROM executions e WHERE e.exec_id = p_exec_ids[i])
               OR EXISTS (SELECT 1 FROM breaks k WHERE k.break_key = p_exec_ids[i]) THEN
                RETURN QUERY SELECT i, 'duplicate';
                CONTINUE;
            END IF;
        END IF;
        INSERT INTO breaks (break_key, exec_id, order_id, kind, detail, report_bytes)
        VALUES (p_break_keys[i], p_exec_ids[i], p_order_ids[i], p_kinds[i], p_details[i], p_reports[i])
        ON CONFLICT (break_key) DO NOTHING;
        RETURN QUERY SELECT i, CASE WHEN FOUND THEN 'break' ELSE 'duplicate' END;
    END LOOP;
END;
$$;

-- --------------------------------------------------------------------------------------------------------- repairs

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

-- ------------------------------------------------------------------------------------------- the risk desk's levers

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

-- The day's accepted buy notional, and the firm halt engaged now if it reached p_threshold (none already in force,
-- none engaged by the threshold earlier today); o_halt_id null when nothing was engaged.
CREATE FUNCTION engage_firm_threshold_halt(p_threshold numeric, OUT o_notional numeric, OUT o_halt_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_day  date := (now() AT TIME ZONE 'America/New_York')::date;
    v_halt record;
BEGIN
    SELECT coalesce(sum(notional), 0) INTO o_notional FROM firm_buy_notional WHERE day = v_day;
    IF o_notional < p_threshold
       OR EXISTS (SELECT 1 FROM trading_halts WHERE scope = 'FIRM' AND cleared_at IS NULL)
       OR EXISTS (SELECT 1 FROM trading_halts WHERE set_by = 'daily-notional-threshold'
                     AND (set_at AT TIME ZONE 'America/New_York')::date = v_day) THEN
        RETURN;
    END IF;
    SELECT * INTO v_halt FROM set_trading_halt(
        'FIRM', NULL, NULL,
        format('the firm''s buys today came to %s, past the daily threshold of %s', format_money(o_notional),
               format_money(p_threshold)),
        false, 'urn:brokerage:operations-service', 'daily-notional-threshold', 'operations-service');
    o_halt_id := (v_halt.o_halt).halt_id;
END;
$$;

-- ----------------------------------------------------------------------------------------------------- who may do what

-- Least privilege (0017): the role that runs the migrations owns all of the above; each service has a group role of
-- its own (no login: whoever deploys makes the users that are members of them) that may execute only its functions
-- and read only its tables, and PUBLIC may do nothing. The functions the services call that write run as the owner
-- (SECURITY DEFINER) with a fixed search_path, so no service role writes balances, positions or the books but
-- through them; what a service still writes itself is its own bookkeeping (the shard count, pauses, quotes, the
-- sweeper's marks, the relay's outbox rows). The same grants, as the services need them, are listed in
-- brokerage/storage/grants.py, and tests/integration/test_grants.py holds the catalog to that list.

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['broker_orders', 'broker_execution', 'broker_callback', 'broker_operations',
                             'broker_reconcile'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- made meanwhile by another database's migration in the same cluster
            END;
        END IF;
    END LOOP;
END;
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM PUBLIC;
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- The functions the services call that write.
ALTER FUNCTION place_orders_v2(text[], text[], text[], text[], text[], bigint[], numeric[], text[], text[], bytea[],
                               timestamptz[]) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION cancel_order(text, text, text, bytea) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION claim_for_submissions(text[], integer[]) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION record_submissions(text[], text[], text[], boolean) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION record_venue_rejections(text[], text[], text[], boolean)
    SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION record_submit_failure(text, text, boolean, timestamptz, boolean)
    SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION end_unsent_order(text, text, boolean) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION expire_unclaimed_orders(integer[], text, integer) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION apply_execution_reports(text[], text[], text[], text[], bigint[], numeric[], bigint[], text[],
                                       timestamptz[], text[], text[], bigint[], boolean)
    SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION record_malformed_reports(text[], text[], text[], text[], text[], bytea[])
    SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION resolve_break(bigint, text, text, text) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION redrive_waiting_order(text, text, text) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION end_lost_order(text, text, text, text) SECURITY DEFINER SET search_path = public, pg_temp;
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
ALTER FUNCTION cancel_for_halts(integer[], integer) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION engage_firm_threshold_halt(numeric) SECURITY DEFINER SET search_path = public, pg_temp;

-- OrderService: places and cancels through its functions; reads its customers' orders, events, cash and positions,
-- the reference data and the shard count (recorded by the first process to start); the relay takes outbox rows.
GRANT EXECUTE ON FUNCTION place_orders_v2(text[], text[], text[], text[], text[], bigint[], numeric[], text[], text[],
                                          bytea[], timestamptz[]),
                          cancel_order(text, text, text, bytea) TO broker_orders;
GRANT EXECUTE ON FUNCTION place_orders_v3(text[], text[], text[], text[], text[], bigint[], numeric[], numeric[],
                                          text[], text[], text[], bytea[], timestamptz[]) TO broker_orders;
GRANT SELECT ON orders, order_events, balances, positions, instruments, quotes TO broker_orders;
GRANT SELECT, INSERT ON shard_config TO broker_orders;
-- The relay's DELETE locks the rows it takes (FOR UPDATE SKIP LOCKED), which asks for UPDATE on some column.
GRANT SELECT, DELETE ON outbox TO broker_orders;
GRANT UPDATE (message_id) ON outbox TO broker_orders;

-- The workers: claim, record and end orders through their functions; the sweeper marks what it swept (these columns
-- only; a status changes only through the functions), the quote feed keeps the reference prices, the shard board
-- reads and (an operator's lever) sets the pauses.
GRANT EXECUTE ON FUNCTION claim_for_submissions(text[], integer[]),
                          record_submissions(text[], text[], text[], boolean),
                          record_venue_rejections(text[], text[], text[], boolean),
                          record_submit_failure(text, text, boolean, timestamptz, boolean),
                          end_unsent_order(text, text, boolean),
                          expire_unclaimed_orders(integer[], text, integer) TO broker_execution;
-- The sweeper's marks update orders, whose average fill price is a column generated by average_price(), evaluated as
-- the updating role (a pure function of the row).
GRANT EXECUTE ON FUNCTION average_price(numeric, bigint) TO broker_execution;
GRANT SELECT ON orders, instruments TO broker_execution;
GRANT UPDATE (swept_at, cancel_swept_at, sweep_count, cancel_sent_at) ON orders TO broker_execution;
GRANT SELECT, INSERT ON shard_config TO broker_execution;
GRANT SELECT, INSERT, UPDATE ON quotes TO broker_execution;
GRANT SELECT, INSERT, UPDATE, DELETE ON paused_shards TO broker_execution;

-- CallbackService: settles through its two functions, and reads nothing itself.
GRANT EXECUTE ON FUNCTION apply_execution_reports(text[], text[], text[], text[], bigint[], numeric[], bigint[],
                                                  text[], timestamptz[], text[], text[], bigint[], boolean),
                          record_malformed_reports(text[], text[], text[], text[], text[], bytea[]) TO broker_callback;

-- CallbackService relays the post-trade feed: it takes rows (their DELETE locks them, FOR UPDATE SKIP LOCKED, which
-- asks for UPDATE on some column) and removes them once JetStream has them.
GRANT SELECT, DELETE ON execution_feed TO broker_callback;
GRANT UPDATE (feed_id) ON execution_feed TO broker_callback;

-- Reconciliation reads the books and what they must agree with, and changes nothing.
GRANT EXECUTE ON FUNCTION format_money(numeric), average_price(numeric, bigint),
                          holding_from_fills(text, bigint, numeric) TO broker_reconcile;
GRANT SELECT ON balances, positions, transfers, account_balances, fundings, repairs, orders, executions, breaks
    TO broker_reconcile;

-- The operations service: repairs through its functions, a drop copy's report booked through settlement's, and
-- reconciliation on demand, with reconciliation's reads. (Not as a member of broker_reconcile: granting a membership
-- takes CREATEROLE, which the migration role need not have.)
GRANT EXECUTE ON FUNCTION format_money(numeric), average_price(numeric, bigint),
                          holding_from_fills(text, bigint, numeric) TO broker_operations;
GRANT SELECT ON balances, positions, transfers, account_balances, fundings, repairs, orders, executions, breaks
    TO broker_operations;
GRANT EXECUTE ON FUNCTION apply_execution_reports(text[], text[], text[], text[], bigint[], numeric[], bigint[],
                                                  text[], timestamptz[], text[], text[], bigint[], boolean),
                          record_malformed_reports(text[], text[], text[], text[], text[], bytea[]),
                          resolve_break(bigint, text, text, text),
                          redrive_waiting_order(text, text, text),
                          end_lost_order(text, text, text, text) TO broker_operations;
-- The operations service alone changes halts, statuses and limits, and reads them with their audit.
GRANT EXECUTE ON FUNCTION set_trading_halt(text, text, text, text, boolean, text, text, text),
                          clear_trading_halt(bigint, text, text, text, text),
                          set_account_status(text, text, text, text, text, text),
                          set_limits(text, numeric, bigint, numeric, integer, text, text, text, text),
                          limits_in_force(text) TO broker_operations;
GRANT SELECT ON trading_halts, risk_limits, risk_events TO broker_operations;
-- The workers read the halts (their cache, checked before each send) and keep halted claims from the venue.
GRANT EXECUTE ON FUNCTION withhold_halted_claims(text[]), cancel_for_halts(integer[], integer) TO broker_execution;
GRANT SELECT ON trading_halts TO broker_execution;
-- The operations service shows the halts' cancel jobs' progress beside the halts.
GRANT SELECT ON halt_cancel_jobs TO broker_operations;
-- The operations service engages the firm's halt at its daily notional threshold.
GRANT EXECUTE ON FUNCTION engage_firm_threshold_halt(numeric) TO broker_operations;
GRANT SELECT ON firm_buy_notional TO broker_operations;
