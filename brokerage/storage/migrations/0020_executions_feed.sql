-- The post-trade feed (issue 19, DESIGN.md "Risk controls"): every booked fill goes out on the JetStream stream
-- EXECUTIONS (subject executions.<shard>) for surveillance and downstream systems, from a row written in the
-- transaction that booked it, with Nats-Msg-Id = exec_id: at least once, and once within the stream's duplicate
-- window. The feed has an outbox of its own, relayed by CallbackService, so a feed that cannot publish (its stream
-- full or missing) never holds up the orders' messages. The message is JSON, its money as decimal strings
-- (docs/executions-feed.md).

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

REVOKE ALL ON SEQUENCE execution_feed_feed_id_seq FROM PUBLIC;
-- CallbackService relays the feed: it takes rows (their DELETE locks them, FOR UPDATE SKIP LOCKED, which asks for
-- UPDATE on some column) and removes them once JetStream has them.
GRANT SELECT, DELETE ON execution_feed TO broker_callback;
GRANT UPDATE (feed_id) ON execution_feed TO broker_callback;
