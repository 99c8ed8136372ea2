-- Taking orders to the venue when it misbehaves, and ending what must not go (DESIGN.md rules 7, 9 and 10).
--
-- 1. Retry state lives per order, here, never in a message's delivery count: an order the venue did not take
--    (a transient error, or an unknown outcome it could not tell us about) is backing off until retry_at, and one
--    whose outcome stayed unknown for the bounded number of attempts is parked, a break with its reservation held,
--    for an operator. Its worker then acknowledges the message: one customer never holds a shard.
-- 2. A customer whose oldest waiting order is backing off or parked is held: every waiting order of theirs names it
--    in held_by (the one that holds, itself), and leaves orders_placed_by_shard, so the claim's search of its shard
--    and the sweeper pass over them by index; their later orders wait behind it (FIFO), every other customer keeps
--    flowing. An order placed while its customer is held is marked by the first claim that picks it. The hold is
--    lifted when the retry comes due (by the claim of the customer's next wake-up, which the sweeper rings) or when
--    the order that holds stops waiting (it was sent after all, canceled, expired: a trigger).
-- 3. A cancel never loses to our own send (rule 9). The claim never takes an order whose cancel was asked, and a
--    claimed order is canceled here only once the venue, asked to cancel it, answered that it never received it:
--    it has kept a tombstone for the day and will refuse the order should it arrive, from any holder of the shard.
-- 4. A market order is a DAY order (rule 10): one still unclaimed at its expiry (its session's close) is canceled as
--    expired and released; a claimed or parked one only after the venue's close and a grace, through the same
--    tombstone; the claim takes nothing expired, and the venue refuses what arrives after its expiry.

ALTER TABLE orders
    ADD COLUMN submit_attempts   integer NOT NULL DEFAULT 0,  -- sends that failed, their backoff doubling with them
    ADD COLUMN unknown_outcomes  integer NOT NULL DEFAULT 0,  -- of them, those the venue could not account for
    ADD COLUMN retry_at          timestamptz,  -- backing off: not sent again before this
    ADD COLUMN parked_at         timestamptz,  -- given up on after its attempts: a break, its reservation held
    ADD COLUMN held_by           text,         -- waits behind this order of its customer (the one that holds: itself)
    ADD COLUMN last_submit_error text,
    ADD COLUMN tombstoned_at     timestamptz;  -- ended here after the venue said it never received it

DROP INDEX orders_placed_by_shard;
CREATE INDEX orders_placed_by_shard ON orders (shard, created_at)
 WHERE status = 'PLACED' AND shard IS NOT NULL AND held_by IS NULL;
-- A customer's claimable orders likewise: with the claim's new conditions beside it, the planner once took the index
-- of all the customer's orders instead (a customer's whole history read by every claim).
DROP INDEX orders_placed_by_customer;
CREATE INDEX orders_placed_by_customer ON orders (customer_id, sequence) WHERE status = 'PLACED' AND held_by IS NULL;
-- The held ones, few, by customer: a claim asks of each customer it picks whether it is held, and the sweeper reads
-- them all for due retries and expiries.
CREATE INDEX orders_held_by_customer ON orders (customer_id, sequence) WHERE status = 'PLACED' AND held_by IS NOT NULL;

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

-- Rule 6, claim before you call (as 0006): the message's customer's waiting orders up to its order, and those of the
-- customers whose orders have waited longest in the shard, up to p_batch_max, each customer's through the newest one
-- picked; now passing over held customers (by index; the message's own lifted first if its retry is due), orders
-- whose cancel was asked (they are never sent: the cancel goes to the venue, rule 9) and expired ones (rule 10).
CREATE OR REPLACE FUNCTION claim_for_submission(p_order_id text, p_batch_max integer) RETURNS SETOF orders
LANGUAGE plpgsql AS $$
DECLARE
    v_target   orders;
    v_customer record;
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
        RETURN QUERY
            WITH claimed AS (
                UPDATE orders o SET claimed_at = now()
                 WHERE o.customer_id = v_customer.customer_id AND o.status = 'PLACED'
                   AND o.sequence <= v_customer.through AND o.claimed_at IS DISTINCT FROM now()
                   AND o.held_by IS NULL AND o.cancel_requested_at IS NULL
                   AND (o.expires_at IS NULL OR o.expires_at > now())
                RETURNING o.*
            )
            SELECT * FROM claimed c ORDER BY c.sequence;
    END LOOP;
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
