-- A halt set with cancel_open_orders (issue 19) also cancels every order open in its scope when it was set: a job per
-- shard, persisted here so it survives a crash, worked by the workers that own the shard, a batch at a time, until
-- nothing in scope is left open (clearing the halt does not stop it: those orders were to be canceled). An order no
-- worker took is canceled at once; one a worker took, or at the venue, gets a cancel request, which goes to the venue
-- as the customer's would (one claimed and never acknowledged ends through the venue's tombstone, rule 9); a fill may
-- win.

CREATE TABLE halt_cancel_jobs (
    halt_id     bigint NOT NULL REFERENCES trading_halts,
    shard       integer NOT NULL,
    canceled    integer NOT NULL DEFAULT 0,  -- orders canceled at once
    requested   integer NOT NULL DEFAULT 0,  -- cancels asked of the venue
    finished_at timestamptz,
    PRIMARY KEY (halt_id, shard)
);
CREATE INDEX halt_cancel_jobs_unfinished ON halt_cancel_jobs (shard) WHERE finished_at IS NULL;

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

-- 0019's halt checks, ending an order that never left as its halt says (end_halted_unsent): canceled by a halt that
-- cancels open orders, else rejected. Bodies replaced in place (same signatures); CREATE OR REPLACE resets
-- SECURITY DEFINER and search_path, so withhold_halted_claims's are set again below.
CREATE OR REPLACE FUNCTION reject_halted_waiting(p_customer_id text, p_through bigint) RETURNS bigint
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
        PERFORM end_halted_unsent(v_order, v_halt);
    END LOOP;
    RETURN p_through;
END;
$$;

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
        CONTINUE WHEN v_order.status <> 'PLACED';
        IF v_order.claims = 1 AND v_order.unknown_outcomes = 0 THEN
            v_order := end_halted_unsent(v_order, v_halt);
            RETURN QUERY SELECT v_order.order_id, lower(v_order.status);
        ELSE
            RETURN QUERY SELECT v_order.order_id, 'withheld';
        END IF;
    END LOOP;
END;
$$;

-- Works the unfinished jobs of these shards, at most p_limit orders each: returns the orders asked of the venue (the
-- caller publishes their cancel requests; the sweeper re-drives any whose message is lost) and those canceled at once.
-- A job with nothing left in scope finishes. Each order under its customer's lock, taken first, as everywhere.
CREATE FUNCTION cancel_for_halts(p_shards integer[], p_limit integer)
RETURNS TABLE (order_id text, customer_id text, shard integer, outcome text)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_job   halt_cancel_jobs;
    v_halt  trading_halts;
    v_id    text;
    v_order orders;
    v_found integer;
BEGIN
    FOR v_job IN
        SELECT * FROM halt_cancel_jobs j WHERE j.shard = ANY(p_shards) AND j.finished_at IS NULL
           FOR UPDATE SKIP LOCKED
    LOOP
        SELECT * INTO v_halt FROM trading_halts h WHERE h.halt_id = v_job.halt_id;
        v_found := 0;
        FOR v_id IN
            SELECT o.order_id FROM orders o
             WHERE o.shard = v_job.shard AND o.status IN ('PLACED', 'SUBMITTED', 'PARTIALLY_FILLED')
               AND o.cancel_requested_at IS NULL AND o.created_at <= v_halt.set_at
               AND (v_halt.scope = 'FIRM' OR (v_halt.scope = 'SYMBOL' AND o.symbol = v_halt.symbol)
                    OR (v_halt.scope = 'CUSTOMER' AND o.customer_id = v_halt.customer_id))
             ORDER BY o.customer_id, o.sequence
             LIMIT p_limit
        LOOP
            v_found := v_found + 1;
            SELECT * INTO v_order FROM orders o WHERE o.order_id = v_id;
            PERFORM 1 FROM balances b WHERE b.customer_id = v_order.customer_id FOR UPDATE;
            SELECT * INTO v_order FROM orders o WHERE o.order_id = v_id FOR UPDATE;
            CONTINUE WHEN v_order.status NOT IN ('PLACED', 'SUBMITTED', 'PARTIALLY_FILLED')
                          OR v_order.cancel_requested_at IS NOT NULL;
            IF v_order.status = 'PLACED' AND v_order.claimed_at IS NULL THEN
                v_order := cancel_unsent(v_order, 'canceled: trading halted');
                UPDATE halt_cancel_jobs j SET canceled = j.canceled + 1
                 WHERE j.halt_id = v_job.halt_id AND j.shard = v_job.shard;
                RETURN QUERY SELECT v_order.order_id, v_order.customer_id, v_order.shard, 'canceled';
            ELSE
                UPDATE orders o SET cancel_requested_at = now(), updated_at = now() WHERE o.order_id = v_id
                RETURNING * INTO v_order;
                PERFORM append_order_event(v_order, 'cancel_requested');
                UPDATE halt_cancel_jobs j SET requested = j.requested + 1
                 WHERE j.halt_id = v_job.halt_id AND j.shard = v_job.shard;
                RETURN QUERY SELECT v_order.order_id, v_order.customer_id, v_order.shard, 'requested';
            END IF;
        END LOOP;
        IF v_found = 0 THEN
            UPDATE halt_cancel_jobs j SET finished_at = now() WHERE j.halt_id = v_job.halt_id AND j.shard = v_job.shard;
        END IF;
    END LOOP;
END;
$$;

ALTER FUNCTION cancel_for_halts(integer[], integer) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION withhold_halted_claims(text[]) SECURITY DEFINER SET search_path = public, pg_temp;
GRANT EXECUTE ON FUNCTION cancel_for_halts(integer[], integer) TO broker_execution;
-- The operations service shows the jobs' progress beside the halts.
GRANT SELECT ON halt_cancel_jobs TO broker_operations;
