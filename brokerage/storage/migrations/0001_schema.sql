-- The record: balances, positions, the tradable universe, orders and everything that proves them.
-- Money and prices are numeric(20,4); quantities are whole shares.

CREATE TABLE shard_config (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    shard_count integer NOT NULL CHECK (shard_count > 0),
    recorded_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE balances (
    customer_id         text PRIMARY KEY,
    available           numeric(20,4) NOT NULL DEFAULT 0,
    reserved            numeric(20,4) NOT NULL DEFAULT 0,
    next_order_sequence bigint NOT NULL DEFAULT 1,
    next_event_sequence bigint NOT NULL DEFAULT 1,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (available >= 0 AND reserved >= 0)
);

CREATE TABLE instruments (
    symbol    text PRIMARY KEY,
    name      text NOT NULL,
    tradable  boolean NOT NULL DEFAULT true,  -- false: trading halted
    tick_size numeric(20,4) NOT NULL CHECK (tick_size > 0)
);

CREATE TABLE quotes (
    symbol    text PRIMARY KEY REFERENCES instruments,
    price     numeric(20,4) NOT NULL CHECK (price > 0),
    quoted_at timestamptz NOT NULL
);

CREATE TABLE positions (
    customer_id  text NOT NULL REFERENCES balances,
    symbol       text NOT NULL REFERENCES instruments,
    quantity     bigint NOT NULL DEFAULT 0,  -- all shares held
    reserved     bigint NOT NULL DEFAULT 0,  -- held for open sells
    average_cost numeric(20,4) NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, symbol),
    CHECK (reserved BETWEEN 0 AND quantity)
);

CREATE TABLE orders (
    order_id            text PRIMARY KEY,  -- a ULID: sorts by creation time
    client_order_id     text NOT NULL,
    customer_id         text NOT NULL REFERENCES balances,
    sequence            bigint NOT NULL,   -- the customer's order sequence, in commit order
    symbol              text NOT NULL REFERENCES instruments,
    side                text NOT NULL CHECK (side IN ('BUY', 'SELL')),
    quantity            bigint NOT NULL CHECK (quantity > 0),
    protection_price    numeric(20,4) CHECK (protection_price > 0),  -- null when rejected before pricing
    reserved_cash       numeric(20,4) NOT NULL DEFAULT 0 CHECK (reserved_cash >= 0),  -- still held, buys
    reserved_shares     bigint NOT NULL DEFAULT 0 CHECK (reserved_shares >= 0),      -- still held, sells
    filled_quantity     bigint NOT NULL DEFAULT 0,
    average_fill_price  numeric(20,4),
    status              text NOT NULL CHECK (status IN
                            ('PLACED', 'SUBMITTED', 'PARTIALLY_FILLED', 'FILLED', 'REJECTED', 'CANCELED')),
    status_reason       text NOT NULL DEFAULT '',
    claimed_at          timestamptz,       -- a worker has taken it to the exchange
    cancel_requested_at timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (customer_id, client_order_id),
    UNIQUE (customer_id, sequence),        -- also serves ListOrders, newest first
    CHECK (filled_quantity BETWEEN 0 AND quantity),
    -- a terminal order holds nothing
    CHECK (status NOT IN ('FILLED', 'REJECTED', 'CANCELED') OR (reserved_cash = 0 AND reserved_shares = 0))
);
CREATE INDEX orders_customer_side ON orders (customer_id, side);
CREATE INDEX orders_customer_created ON orders (customer_id, created_at);
CREATE INDEX orders_open ON orders (status, updated_at) WHERE status IN ('PLACED', 'SUBMITTED', 'PARTIALLY_FILLED');

-- The dedupe of at-least-once execution reports: one row per exec_id, booked once.
CREATE TABLE executions (
    exec_id        text PRIMARY KEY,
    order_id       text NOT NULL REFERENCES orders,
    venue_order_id text NOT NULL DEFAULT '',
    quantity       bigint NOT NULL CHECK (quantity > 0),
    price          numeric(20,4) NOT NULL CHECK (price > 0),
    executed_at    timestamptz NOT NULL,
    booked_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX executions_order ON executions (order_id);

-- Every change of every order, written by the transaction that made it; WatchOrders replays from here.
CREATE TABLE order_events (
    customer_id     text NOT NULL REFERENCES balances,
    sequence        bigint NOT NULL,  -- per customer, from balances.next_event_sequence
    order_id        text NOT NULL REFERENCES orders,
    event_type      text NOT NULL,
    status          text NOT NULL,
    status_reason   text NOT NULL DEFAULT '',
    filled_quantity bigint NOT NULL DEFAULT 0,
    occurred_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, sequence)
);

-- Every movement of cash ('USD') or shares (a symbol) between a customer's available and reserved buckets;
-- balances and positions are the sums of these.
CREATE TABLE ledger_entries (
    entry_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id     text NOT NULL REFERENCES balances,
    asset           text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('funding', 'reserve', 'release', 'fill')),
    available_delta numeric(20,4) NOT NULL DEFAULT 0,
    reserved_delta  numeric(20,4) NOT NULL DEFAULT 0,
    order_id        text REFERENCES orders,
    exec_id         text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (available_delta <> 0 OR reserved_delta <> 0)
);
CREATE INDEX ledger_entries_customer ON ledger_entries (customer_id, asset);
CREATE INDEX ledger_entries_order ON ledger_entries (order_id) WHERE order_id IS NOT NULL;

-- Messages committed with the change that caused them; the relay publishes them and marks them sent.
CREATE TABLE outbox (
    message_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dedupe_id    text NOT NULL,  -- Nats-Msg-Id
    subject      text NOT NULL,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (message_id) WHERE published_at IS NULL;
