-- The shard trigger read shard_config without a key. Inside place_order (SET enable_seqscan = off) that read is
-- planned at a cost of 1e10, above jit_above_cost, so PostgreSQL JIT-compiled it on every placement: about 7 ms
-- of CPU per order. Read by the key, it is an index lookup.
CREATE OR REPLACE FUNCTION orders_assign_shard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.shard := shard_of(NEW.customer_id, (SELECT shard_count FROM shard_config WHERE singleton));
    RETURN NEW;
END;
$$;
