-- A statement about one order, or about one customer's waiting orders, reads them by key again, not every order
-- that waits.
--
-- orders_open (status, updated_at) covered PLACED as well as the orders at the exchange. Between two ANALYZEs the
-- statistics may say almost no order is PLACED while hundreds are (autovacuum analyzes the table when a tenth of it
-- has changed, and at a quiet moment), and the planner then chose that index, status first, for
-- `order_id = $1 AND status = 'PLACED'` (the record of SUBMITTED, a customer's cancel) and for
-- `customer_id = $1 AND status = 'PLACED' AND sequence <= $2` (a claim): each call read every waiting order and
-- every entry the updates since the last vacuum left behind. Measured on `make run` with pg_stat_statements after
-- a load test: orders_open was scanned 13,159 times and returned 12.6 million entries, 957 a scan; the record's
-- update cost 208 us of one backend's time against 67 us for a fill's update of the same row by its key
-- (2,048 orders, batches of 64, nothing else running).
--
-- 1. That index keeps only the orders at the exchange, which is what the sweeper's silent-order question reads by
--    it.
-- 2. The other index of waiting orders, by shard, was open to the same mistake: with the statistics saying it was
--    empty, the planner took a scan of all of it for a claim or a cancel of one customer's. Its predicate now also
--    names the shard (`shard IS NOT NULL`, true of every row: its entries stay the same), so only a statement that
--    picks shards (the claim's search of its shard, the sweeper, the shard board) can use it, and one customer's
--    waiting orders are left to orders_placed_by_customer, the index made for them (0003).
-- 3. The record of SUBMITTED reads and locks the order by its key, then decides from what it read, instead of
--    leaving `status = 'PLACED'` beside the key to the planner.
-- Plain CREATE INDEX: a deployment with a large orders table would build them CONCURRENTLY, outside a migration.

DROP INDEX orders_open;
CREATE INDEX orders_at_the_exchange ON orders (status, updated_at) WHERE status IN ('SUBMITTED', 'PARTIALLY_FILLED');
DROP INDEX orders_placed_by_shard;
CREATE INDEX orders_placed_by_shard ON orders (shard, created_at) WHERE status = 'PLACED' AND shard IS NOT NULL;

-- As in 0003: SUBMITTED, unless a report already moved the order further (reports may arrive before the
-- acknowledgement), which it keeps; the venue's id is kept either way. The order as it now stands; null if unknown.
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

    IF v_order.status = 'PLACED' THEN
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
