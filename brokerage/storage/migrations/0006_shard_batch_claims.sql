-- A worker's claim takes what is waiting in its shard, not only the message's customer.
--
-- The holder of a shard's one message in flight owns the shard, and customers are independent: so the claim takes
-- the message's customer's waiting orders up to its order, as before, and those of the customers whose orders have
-- waited longest in the shard, up to p_batch_max orders, for the worker to submit side by side (each customer's
-- oldest first). Throughput no longer stops at one order per shard per message round trip: the longer a message
-- takes, the more the next claim finds. The messages of orders taken this way find them submitted (rule 5: the
-- message is only a wake-up).
--
-- Each customer's orders are claimed through the newest one picked, so none is left behind an order that goes.
-- An order claimed earlier in this transaction (claimed_at = now()) belongs to that earlier call of the same
-- statement, and is not returned twice.

DROP FUNCTION claim_for_submissions(text[]);
DROP FUNCTION claim_for_submission(text);

CREATE FUNCTION claim_for_submission(p_order_id text, p_batch_max integer) RETURNS SETOF orders
LANGUAGE plpgsql SET enable_seqscan = off AS $$
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
    -- A customer at a time: a join of the picked customers with orders is planned as a scan of every waiting
    -- order, whereas each customer's claim is a lookup in orders_placed_by_customer.
    FOR v_customer IN
        SELECT p.customer_id, max(p.sequence) AS through FROM (
            SELECT v_target.customer_id, v_target.sequence
            UNION ALL
            (SELECT o.customer_id, o.sequence FROM orders o
              WHERE o.shard = v_target.shard AND o.status = 'PLACED' AND o.claimed_at IS DISTINCT FROM now()
              ORDER BY o.created_at
              LIMIT greatest(p_batch_max - 1, 0))
        ) AS p (customer_id, sequence)
        GROUP BY p.customer_id ORDER BY p.customer_id
    LOOP
        RETURN QUERY
            WITH claimed AS (
                UPDATE orders o SET claimed_at = now()
                 WHERE o.customer_id = v_customer.customer_id AND o.status = 'PLACED'
                   AND o.sequence <= v_customer.through AND o.claimed_at IS DISTINCT FROM now()
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
