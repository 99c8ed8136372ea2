-- Named queries: each starts with a "-- name:" line and runs to the next one. Parameters are psycopg's.

-- name: place_orders
-- One row per order, in the order given (a row of nulls: unknown customer).
SELECT * FROM place_orders(%(order_id)s::text[], %(customer_id)s::text[], %(client_order_id)s::text[],
                           %(symbol)s::text[], %(side)s::text[], %(quantity)s::bigint[],
                           %(protection_price)s::numeric[], %(reserve_cash)s::numeric[], %(reject_reason)s::text[],
                           %(subject)s::text[], %(payload)s::bytea[])
       WITH ORDINALITY
 ORDER BY ordinality;

-- name: cancel_placed_order
SELECT * FROM cancel_placed_order(%(customer_id)s, %(order_id)s);

-- name: get_order
SELECT * FROM orders WHERE customer_id = %(customer_id)s AND order_id = %(order_id)s;

-- name: list_orders
-- Newest first by the customer's sequence; the page token carries the last sequence seen.
SELECT * FROM orders
 WHERE customer_id = %(customer_id)s
   AND (%(side)s::text IS NULL OR side = %(side)s)
   AND (%(status)s::text IS NULL OR status = %(status)s)
   AND (%(before_sequence)s::bigint IS NULL OR sequence < %(before_sequence)s)
 ORDER BY sequence DESC
 LIMIT %(limit)s;

-- name: get_account
SELECT customer_id, available, reserved, updated_at FROM balances WHERE customer_id = %(customer_id)s;

-- name: list_positions
SELECT symbol, quantity, reserved, average_cost FROM positions
 WHERE customer_id = %(customer_id)s AND quantity > 0
 ORDER BY symbol;

-- name: reference_data
SELECT i.symbol, i.tradable, i.tick_size, q.price, q.quoted_at
  FROM instruments i LEFT JOIN quotes q USING (symbol);

-- name: record_shard_count
-- The first process to start records the count; every later one reads it back and must agree.
WITH recorded AS (
    INSERT INTO shard_config (shard_count) VALUES (%(shard_count)s) ON CONFLICT DO NOTHING RETURNING shard_count
)
SELECT shard_count FROM recorded UNION ALL SELECT shard_count FROM shard_config;

-- name: claim_outbox_batch
-- SKIP LOCKED: relays in several replicas each take their own rows; a crashed relay's rows come back.
SELECT message_id, dedupe_id, subject, payload FROM outbox
 WHERE published_at IS NULL
 ORDER BY message_id
 LIMIT %(limit)s
 FOR UPDATE SKIP LOCKED;

-- name: mark_outbox_published
UPDATE outbox SET published_at = now() WHERE message_id = ANY(%(message_ids)s);

-- name: purge_published_outbox
DELETE FROM outbox WHERE message_id IN (
    SELECT message_id FROM outbox WHERE published_at < now() - %(retention)s::interval LIMIT 10000
);

-- name: ping
SELECT 1;
