-- Taking orders to the exchange: each order's shard, what the venue calls it, the sweeper's bookkeeping,
-- persisted shard pauses, and the worker's claim and record transactions (DESIGN.md rules 5 to 7).

-- The shard that owns a customer: the first 8 bytes of SHA-256 of the customer id, read as an unsigned
-- big-endian integer, modulo the shard count. The same rule as brokerage.domain.sharding.shard_for (a test
-- holds the two together).
CREATE FUNCTION shard_of(p_customer_id text, p_shard_count integer) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT (CASE WHEN h >= 0 THEN h::numeric ELSE h::numeric + 18446744073709551616 END % p_shard_count)::integer
      FROM (SELECT ('x' || encode(substring(sha256(convert_to(p_customer_id, 'UTF8')) FROM 1 FOR 8), 'hex'))
                   ::bit(64)::bigint AS h) AS first_eight_bytes
$$;

ALTER TABLE orders
    ADD COLUMN shard          integer,
    ADD COLUMN venue_order_id text,
    ADD COLUMN swept_at       timestamptz,  -- the sweeper last re-drove it (republished, or asked the exchange)
    ADD COLUMN sweep_count    integer NOT NULL DEFAULT 0;

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

UPDATE orders SET shard = shard_of(customer_id, (SELECT shard_count FROM shard_config WHERE singleton));
ALTER TABLE orders ALTER COLUMN shard SET NOT NULL;

-- What a worker reads on every message (a customer's unsubmitted orders) and what the sweeper and the shard
-- view read (a shard's unsubmitted orders); both stay small however many orders a customer has had.
CREATE INDEX orders_placed_by_customer ON orders (customer_id, sequence) WHERE status = 'PLACED';
CREATE INDEX orders_placed_by_shard ON orders (shard, created_at) WHERE status = 'PLACED';

-- A paused shard sends nothing to the exchange, whichever replica of whichever cluster holds it.
CREATE TABLE paused_shards (
    shard     integer PRIMARY KEY CHECK (shard >= 0),
    reason    text NOT NULL,
    paused_at timestamptz NOT NULL DEFAULT now()
);

-- Appends an order event with the customer's next event sequence. The caller holds the customer's balances
-- row lock (taken first, as every per-customer transaction does).
CREATE FUNCTION append_order_event(p_order orders, p_event_type text) RETURNS void
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_sequence bigint;
BEGIN
    UPDATE balances SET next_event_sequence = next_event_sequence + 1
     WHERE customer_id = p_order.customer_id
    RETURNING next_event_sequence - 1 INTO v_sequence;
    INSERT INTO order_events (customer_id, sequence, order_id, event_type, status, status_reason, filled_quantity)
    VALUES (p_order.customer_id, v_sequence, p_order.order_id, p_event_type, p_order.status, p_order.status_reason,
            p_order.filled_quantity);
END;
$$;

-- Rule 6, claim before you call: claims the order and every older order of its customer still PLACED, and
-- returns them oldest first, for the worker to submit in that order (rule 5). A claim only ever fences off the
-- customer's cancel (cancel_placed_order needs claimed_at IS NULL); it is never undone, since the exchange may
-- have the order. A claim by a worker that has since died is simply claimed again: the message's holder owns
-- the shard (JetStream lets one message of a shard be in flight), and the exchange dedupes by order id.
-- Nothing is returned for an order that is no longer PLACED. A paused shard raises object_not_in_prerequisite_state.
CREATE FUNCTION claim_for_submission(p_order_id text) RETURNS SETOF orders
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_target orders;
BEGIN
    SELECT * INTO v_target FROM orders WHERE order_id = p_order_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM paused_shards WHERE shard = v_target.shard) THEN
        RAISE EXCEPTION 'shard % is paused', v_target.shard USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN QUERY
        WITH claimed AS (
            UPDATE orders SET claimed_at = now()
             WHERE customer_id = v_target.customer_id AND status = 'PLACED' AND sequence <= v_target.sequence
            RETURNING *
        )
        SELECT * FROM claimed ORDER BY sequence;
END;
$$;

-- The exchange acknowledged the order: SUBMITTED, unless a report already moved it further (reports may
-- arrive before the acknowledgement), which it keeps. Returns the order as it now stands; null if unknown.
CREATE FUNCTION record_submitted(p_order_id text, p_venue_order_id text) RETURNS orders
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_order orders;
BEGIN
    SELECT * INTO v_order FROM orders WHERE order_id = p_order_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM balances WHERE customer_id = v_order.customer_id FOR UPDATE;

    UPDATE orders SET status = 'SUBMITTED', venue_order_id = p_venue_order_id, updated_at = now()
     WHERE order_id = p_order_id AND status = 'PLACED'
    RETURNING * INTO v_order;
    IF FOUND THEN
        PERFORM append_order_event(v_order, 'submitted');
        RETURN v_order;
    END IF;
    UPDATE orders SET venue_order_id = p_venue_order_id WHERE order_id = p_order_id AND venue_order_id IS NULL;
    SELECT * INTO v_order FROM orders WHERE order_id = p_order_id;
    RETURN v_order;
END;
$$;

-- The exchange refused the order: REJECTED with its reason and the reservation released, unless it already
-- filled or ended. Returns the order as it now stands; null if unknown.
CREATE FUNCTION record_venue_rejection(p_order_id text, p_reason text) RETURNS orders
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_order orders;
BEGIN
    SELECT * INTO v_order FROM orders WHERE order_id = p_order_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM balances WHERE customer_id = v_order.customer_id FOR UPDATE;

    UPDATE orders SET status = 'REJECTED', status_reason = p_reason, reserved_cash = 0, reserved_shares = 0,
                      updated_at = now()
     WHERE order_id = p_order_id AND status IN ('PLACED', 'SUBMITTED') AND filled_quantity = 0
    RETURNING * INTO v_order;
    IF FOUND THEN
        PERFORM release_reservation(p_order_id);
        PERFORM append_order_event(v_order, 'rejected');
        RETURN v_order;
    END IF;
    SELECT * INTO v_order FROM orders WHERE order_id = p_order_id;
    RETURN v_order;
END;
$$;

-- Group commit of the workers' claims and records as one statement each: the calls of one moment go in as arrays
-- (one round trip, one commit) instead of a pipelined transaction of one statement per call, whose client side
-- cost psycopg several times as much. The caller orders the calls customer by customer (so concurrent batches
-- lock customers in one order and cannot deadlock), as place_orders; every row carries the 1-based ordinal of
-- its call in the arrays.

-- A claim for a paused shard raises, as claim_for_submission does, failing the statement: the caller runs each
-- call again alone, so only the paused shard's claims fail.
CREATE FUNCTION claim_for_submissions(p_order_ids text[]) RETURNS TABLE (ordinal integer, claimed orders)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
BEGIN
    FOR i IN 1 .. cardinality(p_order_ids) LOOP
        RETURN QUERY SELECT i, c FROM claim_for_submission(p_order_ids[i]) AS c;
    END LOOP;
END;
$$;

CREATE FUNCTION record_submissions(p_order_ids text[], p_venue_order_ids text[])
RETURNS TABLE (ordinal integer, recorded orders)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
BEGIN
    FOR i IN 1 .. cardinality(p_order_ids) LOOP
        RETURN QUERY SELECT i, record_submitted(p_order_ids[i], p_venue_order_ids[i]);
    END LOOP;
END;
$$;

CREATE FUNCTION record_venue_rejections(p_order_ids text[], p_reasons text[])
RETURNS TABLE (ordinal integer, recorded orders)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
BEGIN
    FOR i IN 1 .. cardinality(p_order_ids) LOOP
        RETURN QUERY SELECT i, record_venue_rejection(p_order_ids[i], p_reasons[i]);
    END LOOP;
END;
$$;
