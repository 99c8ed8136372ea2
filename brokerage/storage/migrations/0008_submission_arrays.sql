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
