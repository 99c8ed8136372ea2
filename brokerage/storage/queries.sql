-- Named queries: each starts with a "-- name:" line and runs to the next one. Parameters are psycopg's.

-- name: place_orders
-- One row per order, in the order given: the order, or a row of nulls for an unknown customer, or only retry_after
-- for a customer past its rate limit (nothing stored).
SELECT (p.placed).*, p.retry_after
  FROM place_orders_v3(%(order_id)s::text[], %(customer_id)s::text[], %(client_order_id)s::text[],
                       %(symbol)s::text[], %(side)s::text[], %(quantity)s::bigint[], %(protection_price)s::numeric[],
                       %(reference_price)s::numeric[], %(reject_code)s::text[], %(reject_reason)s::text[],
                       %(subject)s::text[], %(payload)s::bytea[], %(expires_at)s::timestamptz[])
       WITH ORDINALITY AS p
 ORDER BY p.ordinality;

-- name: cancel_order
SELECT * FROM cancel_order(%(customer_id)s, %(order_id)s, %(subject)s, %(payload)s);

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
SELECT customer_id, available, reserved, updated_at, account_status AS status
  FROM balances WHERE customer_id = %(customer_id)s;

-- name: list_positions
SELECT symbol, quantity, reserved, average_cost FROM positions
 WHERE customer_id = %(customer_id)s AND quantity > 0
 ORDER BY symbol;

-- name: reference_data
SELECT i.symbol, i.tick_size, q.price, q.quoted_at
  FROM instruments i LEFT JOIN quotes q USING (symbol);

-- name: record_shard_count
-- The first process to start records the count (a process starting at the same moment waits for it here).
INSERT INTO shard_config (shard_count) VALUES (%(shard_count)s) ON CONFLICT DO NOTHING;

-- name: recorded_shard_count
-- A statement of its own, after record_shard_count: its snapshot sees whichever process recorded the count.
SELECT shard_count FROM shard_config WHERE singleton;

-- name: take_outbox_batch
-- Takes the oldest messages out of the outbox and returns them, in one statement: the caller's transaction commits
-- their removal only once JetStream has them. SKIP LOCKED: relays in several replicas each take their own rows; a
-- crashed relay's rows come back.
DELETE FROM outbox
 WHERE message_id IN (SELECT message_id FROM outbox ORDER BY message_id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING message_id, dedupe_id, subject, payload, message_type;

-- name: take_feed_batch
-- The post-trade feed's outbox, as take_outbox_batch: its oldest rows, each with exec_id as its message id.
DELETE FROM execution_feed
 WHERE feed_id IN (SELECT feed_id FROM execution_feed ORDER BY feed_id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING feed_id AS message_id, exec_id AS dedupe_id, subject, payload, 'ExecutionBooked' AS message_type;

-- The workers' group commits: each parameter is an array, an element per call (storage.group_commit).
-- name: claim_for_submissions
SELECT c.ordinal, (c.claimed).* FROM claim_for_submissions(%(order_id)s, %(batch_max)s) AS c;

-- name: record_submissions
-- With wait false, a call whose customer another transaction holds is not run: its row is busy (0010).
SELECT r.ordinal, r.busy, (r.recorded).* FROM record_submissions(%(order_id)s, %(venue_order_id)s, %(customer_id)s,
                                                             %(wait)s) AS r;

-- name: record_venue_rejections
SELECT r.ordinal, r.busy, (r.recorded).* FROM record_venue_rejections(%(order_id)s, %(reason)s, %(customer_id)s,
                                                                  %(wait)s) AS r;

-- name: shard_states
-- Per shard: its pause, its oldest order still PLACED (held back or not: each kind by its index), and the order a
-- worker has claimed but the exchange has not yet acknowledged (the one in flight).
SELECT s.shard, p.shard IS NOT NULL AS paused, coalesce(p.reason, '') AS pause_reason,
       least((SELECT min(o.created_at) FROM orders o
               WHERE o.shard = s.shard AND o.status = 'PLACED' AND o.held_by IS NULL),
             (SELECT min(o.created_at) FROM orders o
               WHERE o.shard = s.shard AND o.status = 'PLACED' AND o.held_by IS NOT NULL)) AS oldest_placed_at,
       (SELECT o.order_id FROM orders o
         WHERE o.shard = s.shard AND o.status = 'PLACED' AND o.held_by IS NULL AND o.claimed_at IS NOT NULL
         ORDER BY o.claimed_at DESC LIMIT 1) AS order_in_flight
  FROM unnest(%(shards)s::integer[]) AS s (shard)
  LEFT JOIN paused_shards p USING (shard)
 ORDER BY s.shard;

-- name: paused_shards
SELECT shard FROM paused_shards;

-- name: pause_shard
INSERT INTO paused_shards (shard, reason, paused_by) VALUES (%(shard)s, %(reason)s, %(paused_by)s)
ON CONFLICT (shard) DO UPDATE SET reason = excluded.reason, paused_by = excluded.paused_by;

-- name: resume_shard
DELETE FROM paused_shards WHERE shard = %(shard)s;

-- name: claim_unsent_placed
-- The sweeper's first question: orders of these shards PLACED (and not re-driven) for longer than the limit, in
-- shards not paused: `after` in an idle shard (nothing waiting, nothing in flight: the wake-up is lost),
-- `busy_after` in a busy one (the order may only be queued, and a later message of its customer submits it too).
-- Row locks (SKIP LOCKED) keep concurrent sweepers off the same orders, and the swept mark, committed at once
-- (before the republish: no row stays locked while NATS answers), keeps later sweeps off them until the limit
-- passes again; sweep_count makes each republish's message id new. Held orders wait for their retry (claim_due_retries)
-- or an operator; cancels asked and expired orders have ways of their own.
WITH due AS (
    SELECT order_id FROM orders
     WHERE status = 'PLACED' AND shard = ANY(%(shards)s) AND held_by IS NULL AND cancel_requested_at IS NULL
       AND (expires_at IS NULL OR expires_at > now())
       AND coalesce(swept_at, created_at)
           < now() - CASE WHEN shard = ANY(%(idle_shards)s) THEN %(after)s ELSE %(busy_after)s END
       AND shard NOT IN (SELECT shard FROM paused_shards)
     ORDER BY shard, created_at
     LIMIT %(limit)s
     FOR UPDATE SKIP LOCKED
)
UPDATE orders o SET swept_at = now(), sweep_count = o.sweep_count + 1
  FROM due WHERE o.order_id = due.order_id
RETURNING o.order_id, o.customer_id, o.shard, o.symbol, o.side, o.quantity, o.protection_price, o.sweep_count;

-- name: claim_unsent_cancels
-- The sweeper's third question: cancels asked for longer than the limit and not yet sent (their message lost),
-- with the same limits as claim_unsent_placed, timed by their own mark (the silent-order question renews
-- swept_at of these very orders).
WITH due AS (
    SELECT order_id FROM orders
     WHERE cancel_requested_at IS NOT NULL AND cancel_sent_at IS NULL
       AND status IN ('PLACED', 'SUBMITTED', 'PARTIALLY_FILLED') AND shard = ANY(%(shards)s)
       AND coalesce(cancel_swept_at, cancel_requested_at)
           < now() - CASE WHEN shard = ANY(%(idle_shards)s) THEN %(after)s ELSE %(busy_after)s END
       AND shard NOT IN (SELECT shard FROM paused_shards)
     ORDER BY cancel_requested_at
     LIMIT %(limit)s
     FOR UPDATE SKIP LOCKED
)
UPDATE orders o SET cancel_swept_at = now(), sweep_count = o.sweep_count + 1
  FROM due WHERE o.order_id = due.order_id
RETURNING o.order_id, o.customer_id, o.shard, o.sweep_count;

-- name: claim_silent_submitted
-- The sweeper's second question: orders at the exchange with no change for longer than the limit.
WITH due AS (
    SELECT order_id FROM orders
     WHERE status IN ('SUBMITTED', 'PARTIALLY_FILLED') AND shard = ANY(%(shards)s)
       AND updated_at < now() - %(after)s AND (swept_at IS NULL OR swept_at < now() - %(after)s)
     ORDER BY updated_at
     LIMIT %(limit)s
     FOR UPDATE SKIP LOCKED
)
UPDATE orders o SET swept_at = now(), sweep_count = o.sweep_count + 1
  FROM due WHERE o.order_id = due.order_id
RETURNING o.order_id, o.customer_id;

-- name: record_quotes
-- Reference prices from the exchange; a newer price replaces an older one, and only for instruments we list.
-- (A halt at the exchange is the exchange's to enforce: it refuses the order, which ends REJECTED with its reason.)
INSERT INTO quotes (symbol, price, quoted_at)
SELECT symbol, price, quoted_at
  FROM unnest(%(symbol)s::text[], %(price)s::numeric[], %(quoted_at)s::timestamptz[]) AS q (symbol, price, quoted_at)
 WHERE symbol IN (SELECT symbol FROM instruments)
ON CONFLICT (symbol) DO UPDATE SET price = excluded.price, quoted_at = excluded.quoted_at
 WHERE quotes.quoted_at < excluded.quoted_at;

-- name: ping
SELECT 1;

-- name: apply_execution_reports
-- One row per report, with its ordinal in the batch; with wait false, the outcome of a report whose customer another
-- transaction holds is 'busy', and the report is not applied (0010).
SELECT * FROM apply_execution_reports(%(exec_id)s::text[], %(order_id)s::text[], %(venue_order_id)s::text[],
                                      %(exec_type)s::text[], %(last_quantity)s::bigint[], %(last_price)s::numeric[],
                                      %(cumulative_quantity)s::bigint[], %(reason)s::text[],
                                      %(transact_time)s::timestamptz[], %(symbol)s::text[], %(side)s::text[],
                                      %(order_quantity)s::bigint[], %(wait)s);

-- name: record_malformed_reports
-- One row per report, with its ordinal: 'break' for one kept now, 'duplicate' for one kept (or booked) before.
SELECT * FROM record_malformed_reports(%(break_key)s::text[], %(kind)s::text[], %(exec_id)s::text[],
                                       %(order_id)s::text[], %(detail)s::text[], %(report)s::bytea[]);

-- name: pending_cancel
-- An order a worker has taken (to the exchange, or on its way there) whose customer asked to cancel it, the cancel
-- not yet sent. The order is found by its key alone and the rest checked on it: with the status condition beside the
-- key, stale statistics once made the planner read every order at the exchange through their index (0011).
WITH o AS MATERIALIZED (SELECT * FROM orders WHERE order_id = %(order_id)s)
SELECT * FROM o
 WHERE cancel_requested_at IS NOT NULL AND cancel_sent_at IS NULL
   AND status IN ('PLACED', 'SUBMITTED', 'PARTIALLY_FILLED');

-- name: record_submit_failure
SELECT * FROM record_submit_failure(%(order_id)s, %(error)s, %(unknown)s, %(retry_at)s, %(park)s);

-- name: end_unsent_order
-- The venue said it never received the order (and keeps a tombstone): it ends here, released.
SELECT * FROM end_unsent_order(%(order_id)s, %(reason)s, false);

-- name: expire_unclaimed_orders
SELECT * FROM expire_unclaimed_orders(%(shards)s, %(reason)s, %(limit)s);

-- name: claim_due_retries
-- The sweeper's retry question: orders of these shards whose backoff is over (the one that holds its customer),
-- marked swept so another sweep leaves them until `after` passes; their wake-ups lift the hold and send them.
WITH due AS (
    SELECT order_id FROM orders
     WHERE status = 'PLACED' AND shard = ANY(%(shards)s) AND held_by = order_id AND retry_at <= now()
       AND parked_at IS NULL AND (swept_at IS NULL OR swept_at < retry_at OR swept_at < now() - %(after)s)
       AND shard NOT IN (SELECT shard FROM paused_shards)
     ORDER BY retry_at
     LIMIT %(limit)s
     FOR UPDATE SKIP LOCKED
)
UPDATE orders o SET swept_at = now(), sweep_count = o.sweep_count + 1
  FROM due WHERE o.order_id = due.order_id
RETURNING o.order_id, o.customer_id, o.shard, o.symbol, o.side, o.quantity, o.protection_price, o.sweep_count;

-- name: claim_expired_claimed
-- Rule 10: orders of these shards a worker took (or parked) and still waiting, expired longer ago than the grace
-- (the venue has closed, and no send of theirs can still be on its way), for the venue to be asked to cancel: it
-- answers that it never received them (a tombstone) and they end here, or its own close ends them. Marked swept.
-- Held orders and the others are read each by their own index.
WITH expired AS (
    SELECT order_id, swept_at, expires_at FROM orders
     WHERE status = 'PLACED' AND shard = ANY(%(shards)s) AND held_by IS NULL AND claimed_at IS NOT NULL
       AND expires_at < now() - %(grace)s
    UNION ALL
    SELECT order_id, swept_at, expires_at FROM orders
     WHERE status = 'PLACED' AND shard = ANY(%(shards)s) AND held_by IS NOT NULL AND claimed_at IS NOT NULL
       AND expires_at < now() - %(grace)s
), due AS (
    SELECT o.order_id FROM orders o JOIN expired e USING (order_id)
     WHERE o.status = 'PLACED' AND (o.swept_at IS NULL OR o.swept_at < now() - %(after)s)
     ORDER BY o.expires_at
     LIMIT %(limit)s
     FOR UPDATE OF o SKIP LOCKED
)
UPDATE orders o SET swept_at = now(), sweep_count = o.sweep_count + 1
  FROM due WHERE o.order_id = due.order_id
RETURNING o.*;

-- name: record_cancel_sent
UPDATE orders SET cancel_sent_at = now() WHERE order_id = %(order_id)s AND cancel_sent_at IS NULL;

-- name: order_events_after
-- A customer's order events after a sequence, oldest first, each with the order as that event left it.
SELECT e.sequence AS event_sequence, e.event_type, e.occurred_at, e.status, e.status_reason, e.filled_quantity,
       e.average_fill_price, e.cancel_requested, CASE WHEN e.status = 'REJECTED' THEN o.reject_code END AS reject_code,
       o.order_id, o.client_order_id, o.customer_id, o.sequence, o.symbol, o.side, o.quantity, o.protection_price,
       o.created_at
  FROM order_events e JOIN orders o USING (order_id)
 WHERE e.customer_id = %(customer_id)s AND e.sequence > %(after)s
 ORDER BY e.sequence
 LIMIT %(limit)s;

-- Reconciliation (DESIGN.md rule 8): each query returns the discrepancies of one check, as a subject and what is
-- wrong with it; no rows is a clean check. They read the tables alone, trusting none of their constraints (a
-- check that only restated one would prove nothing). They are run with parameters, so a literal percent sign is
-- doubled. account_balances (0012) is what every account's transfers add up to.

-- name: reconcile_balances_vs_accounts
WITH accounts AS (
    SELECT customer_id, sum(balance) FILTER (WHERE account = 'available') AS available,
           sum(balance) FILTER (WHERE account = 'reserved') AS reserved
      FROM account_balances WHERE customer_id IS NOT NULL AND asset = 'USD' GROUP BY customer_id
)
SELECT 'customer ' || coalesce(b.customer_id, a.customer_id) AS subject,
       format('available %%s, reserved %%s; its accounts hold %%s and %%s', format_money(coalesce(b.available, 0)),
              format_money(coalesce(b.reserved, 0)), format_money(coalesce(a.available, 0)),
              format_money(coalesce(a.reserved, 0))) AS detail
  FROM balances b FULL JOIN accounts a USING (customer_id)
 WHERE (coalesce(b.available, 0), coalesce(b.reserved, 0)) <> (coalesce(a.available, 0), coalesce(a.reserved, 0));

-- name: reconcile_positions_vs_accounts
-- A position's shares are its free (available) and reserved accounts together.
WITH accounts AS (
    SELECT customer_id, asset AS symbol, sum(balance) AS quantity,
           sum(balance) FILTER (WHERE account = 'reserved') AS reserved
      FROM account_balances WHERE customer_id IS NOT NULL AND asset <> 'USD' GROUP BY customer_id, asset
)
SELECT format('customer %%s %%s', coalesce(p.customer_id, a.customer_id), coalesce(p.symbol, a.symbol)) AS subject,
       format('%%s shares (%%s reserved); its accounts hold %%s (%%s)', coalesce(p.quantity, 0),
              coalesce(p.reserved, 0), coalesce(a.quantity, 0), coalesce(a.reserved, 0)) AS detail
  FROM positions p FULL JOIN accounts a USING (customer_id, symbol)
 WHERE (coalesce(p.quantity, 0), coalesce(p.reserved, 0)) <> (coalesce(a.quantity, 0), coalesce(a.reserved, 0));

-- name: reconcile_negative_cash
SELECT 'customer ' || customer_id AS subject,
       format('available %%s, reserved %%s', format_money(available), format_money(reserved)) AS detail
  FROM balances WHERE available < 0 OR reserved < 0;

-- name: reconcile_transfers_without_cause
-- Money arrives in a customer's account only from a source proven outside it: a funding from its audited record, a
-- fill from its booked execution (and that from the venue's drop copy), an error-account booking from its break, a
-- repair from its audit row; a reservation moves only for its own order. A transfer whose cause is missing, or
-- names another customer, asset or amount, is listed.
SELECT format('transfer %%s (%%s)', t.transfer_key, t.kind) AS subject,
       CASE t.kind
           WHEN 'funding' THEN 'no funding record of this customer, asset and amount'
           WHEN 'fill' THEN 'no booked fill of this order'
           WHEN 'error' THEN 'no break of this execution'
           WHEN 'repair' THEN 'no repair of this break or order'
           ELSE 'not for an order of this customer in this asset' END AS detail
  FROM transfers t
 WHERE NOT CASE t.kind
           WHEN 'funding' THEN EXISTS (
               SELECT 1 FROM fundings f WHERE f.funding_id = t.funding_id AND f.customer_id = t.customer_id
                  AND f.asset = t.asset AND f.amount = t.amount AND (t.debit_account, t.credit_account) = ('funding', 'available'))
           WHEN 'fill' THEN EXISTS (
               SELECT 1 FROM executions e JOIN orders o USING (order_id)
                WHERE e.exec_id = t.exec_id AND e.order_id = t.order_id AND e.quantity > 0
                  AND o.customer_id = t.customer_id AND t.asset IN ('USD', o.symbol))
           WHEN 'error' THEN EXISTS (SELECT 1 FROM breaks k WHERE k.break_id = t.break_id AND k.exec_id = t.exec_id)
                             AND t.customer_id IS NULL
           WHEN 'repair' THEN EXISTS (SELECT 1 FROM repairs r WHERE r.repair_id = t.repair_id)
           ELSE EXISTS (
               SELECT 1 FROM orders o WHERE o.order_id = t.order_id AND o.customer_id = t.customer_id
                  AND t.asset = CASE o.side WHEN 'BUY' THEN 'USD' ELSE o.symbol END
                  AND ((t.kind, t.debit_account, t.credit_account) IN (('reserve', 'available', 'reserved'),
                                                                       ('release', 'reserved', 'available'))))
       END IS TRUE
 ORDER BY t.transfer_id;

-- name: reconcile_fundings_vs_transfers
SELECT 'funding ' || f.funding_id AS subject,
       format('%%s %%s for customer %%s, booked by %%s: no transfer from the funding account', format_money(f.amount),
              f.asset, f.customer_id, f.funded_by) AS detail
  FROM fundings f
 WHERE NOT EXISTS (SELECT 1 FROM transfers t WHERE t.kind = 'funding' AND t.funding_id = f.funding_id);

-- name: reconcile_reservations_vs_transfers
-- What each order holds is what its transfers moved into and out of its customer's reserved account; an open buy
-- holds at least its unfilled rest at its protection price, an open sell exactly its unfilled shares, an ended order
-- nothing.
WITH held AS (
    SELECT order_id, sum(CASE WHEN credit_account = 'reserved' THEN amount ELSE -amount END) AS held
      FROM transfers WHERE order_id IS NOT NULL AND 'reserved' IN (debit_account, credit_account)
     GROUP BY order_id
)
SELECT 'order ' || o.order_id AS subject,
       format('%%s %%s %%s of %%s %%s, %%s filled: holds %%s; its transfers hold %%s', o.status, o.side, o.quantity,
              o.symbol, CASE WHEN o.protection_price IS NULL THEN 'unpriced'
                             ELSE 'protected at ' || format_money(o.protection_price) END,
              o.filled_quantity, format_money(o.reserved_cash + o.reserved_shares), format_money(coalesce(h.held, 0)))
       AS detail
  FROM orders o LEFT JOIN held h USING (order_id)
 WHERE o.reserved_cash + o.reserved_shares <> coalesce(h.held, 0)
    OR (o.status IN ('FILLED', 'REJECTED', 'CANCELED') AND o.reserved_cash + o.reserved_shares <> 0)
    OR (o.status IN ('PLACED', 'SUBMITTED', 'PARTIALLY_FILLED') AND o.side = 'BUY'
        AND (o.reserved_shares <> 0 OR o.protection_price IS NULL
             OR o.reserved_cash < (o.quantity - o.filled_quantity) * o.protection_price))
    OR (o.status IN ('PLACED', 'SUBMITTED', 'PARTIALLY_FILLED') AND o.side = 'SELL'
        AND (o.reserved_cash <> 0 OR o.reserved_shares <> o.quantity - o.filled_quantity));

-- name: reconcile_reserved_cash_vs_open_orders
SELECT 'customer ' || b.customer_id AS subject,
       format('reserved %%s; open orders hold %%s', format_money(b.reserved), format_money(coalesce(o.held, 0)))
       AS detail
  FROM balances b
  LEFT JOIN (SELECT customer_id, sum(reserved_cash) AS held FROM orders
              WHERE status IN ('PLACED', 'SUBMITTED', 'PARTIALLY_FILLED') GROUP BY customer_id) o USING (customer_id)
 WHERE b.reserved <> coalesce(o.held, 0);

-- name: reconcile_reserved_shares_vs_open_orders
SELECT format('customer %%s %%s', coalesce(p.customer_id, o.customer_id), coalesce(p.symbol, o.symbol)) AS subject,
       format('%%s shares reserved; open sells hold %%s', coalesce(p.reserved, 0), coalesce(o.held, 0)) AS detail
  FROM positions p
  FULL JOIN (SELECT customer_id, symbol, sum(reserved_shares) AS held FROM orders
              WHERE side = 'SELL' AND status IN ('PLACED', 'SUBMITTED', 'PARTIALLY_FILLED')
              GROUP BY customer_id, symbol) o USING (customer_id, symbol)
 WHERE coalesce(p.reserved, 0) <> coalesce(o.held, 0);

-- name: reconcile_filled_vs_executions
SELECT 'order ' || o.order_id AS subject,
       format('%%s filled for %%s; its executions add up to %%s for %%s', o.filled_quantity,
              format_money(o.filled_notional), coalesce(sum(e.quantity), 0),
              format_money(coalesce(sum(e.quantity * e.price), 0))) AS detail
  FROM orders o LEFT JOIN executions e USING (order_id)
 GROUP BY o.order_id
HAVING (o.filled_quantity, o.filled_notional, o.average_fill_price)
       IS DISTINCT FROM (coalesce(sum(e.quantity), 0)::bigint, coalesce(sum(e.quantity * e.price), 0),
                         average_price(coalesce(sum(e.quantity * e.price), 0), coalesce(sum(e.quantity), 0)::bigint));

-- name: reconcile_fills_vs_transfers
-- Each fill moved exactly its cost (a buy) or proceeds (a sell) and its shares, between the customer and clearing.
SELECT 'execution ' || e.exec_id AS subject,
       format('%%s %%s at %%s: its transfers moved %%s cash and %%s shares to the customer', o.side, e.quantity,
              format_money(e.price), format_money(coalesce(t.cash, 0)), coalesce(t.shares, 0)) AS detail
  FROM executions e JOIN orders o USING (order_id)
  LEFT JOIN (SELECT exec_id,
                    sum(CASE WHEN credit_account = 'clearing' THEN -amount ELSE amount END) FILTER (WHERE asset = 'USD')
                        AS cash,
                    sum(CASE WHEN credit_account = 'clearing' THEN -amount ELSE amount END) FILTER (WHERE asset <> 'USD')
                        AS shares
               FROM transfers WHERE kind = 'fill' GROUP BY exec_id) t USING (exec_id)
 WHERE e.quantity > 0
   AND (coalesce(t.cash, 0), coalesce(t.shares, 0)) IS DISTINCT FROM
       (CASE o.side WHEN 'BUY' THEN -e.quantity * e.price ELSE e.quantity * e.price END,
        CASE o.side WHEN 'BUY' THEN e.quantity ELSE -e.quantity END);

-- name: reconcile_holdings_vs_fills
-- Each position is its customer's fills of the stock folded in booking order by holding_after_fill, settlement's
-- own rule: the shares, and the cost basis that the average cost is derived from.
WITH folded AS (
    SELECT o.customer_id, o.symbol,
           holding_from_fills(o.side, e.quantity, e.price ORDER BY t.transfer_id) AS held
      FROM executions e JOIN orders o USING (order_id)
      JOIN transfers t ON t.transfer_key = e.exec_id || ':shares'
     WHERE e.quantity > 0
     GROUP BY o.customer_id, o.symbol
)
SELECT format('customer %%s %%s', coalesce(p.customer_id, f.customer_id), coalesce(p.symbol, f.symbol)) AS subject,
       format('%%s shares at an average cost of %%s; its fills make %%s at %%s', coalesce(p.quantity, 0),
              format_money(coalesce(p.average_cost, 0)), coalesce((f.held).quantity, 0),
              format_money(coalesce(average_price((f.held).cost_basis, (f.held).quantity), 0))) AS detail
  FROM positions p FULL JOIN folded f USING (customer_id, symbol)
 WHERE (coalesce(p.quantity, 0), coalesce(p.cost_basis, 0), coalesce(p.average_cost, 0))
       <> (coalesce((f.held).quantity, 0), coalesce((f.held).cost_basis, 0),
           coalesce(average_price((f.held).cost_basis, (f.held).quantity), 0));

-- name: reconcile_stuck_orders
SELECT 'order ' || order_id AS subject,
       format('%%s since %%s (customer %%s)', status, updated_at, customer_id) AS detail
  FROM orders
 WHERE status IN ('PLACED', 'SUBMITTED', 'PARTIALLY_FILLED') AND updated_at < now() - %(stuck_after)s
 ORDER BY updated_at;

-- name: reconcile_open_breaks
SELECT format('break %%s (%%s)', break_id, coalesce('execution ' || exec_id, 'order ' || order_id, break_key))
       AS subject, detail
  FROM breaks WHERE resolved_at IS NULL ORDER BY recorded_at;

-- name: reconcile_day_clearing
-- What clearing moved for each execution of a trading day (New York), from the venue's side: a buy's cost in and its
-- shares out, a sell's shares in and its proceeds out; booked to a customer or to the error account. To compare
-- with the exchange's drop copy. A movement with no execution or break to date it counts on the day it was booked.
SELECT t.exec_id, min(t.order_id) AS order_id, min(t.asset) FILTER (WHERE t.asset <> 'USD') AS symbol,
       coalesce(sum(CASE WHEN t.credit_account = 'clearing' THEN t.amount ELSE -t.amount END)
                    FILTER (WHERE t.asset <> 'USD'), 0)::bigint AS shares,
       coalesce(sum(CASE WHEN t.credit_account = 'clearing' THEN t.amount ELSE -t.amount END)
                    FILTER (WHERE t.asset = 'USD'), 0) AS cash
  FROM transfers t
  LEFT JOIN executions e ON e.exec_id = t.exec_id
  LEFT JOIN breaks k ON k.break_id = t.break_id
 WHERE 'clearing' IN (t.debit_account, t.credit_account)
   AND (coalesce(e.executed_at, (k.report->>'transact_time')::timestamptz, t.booked_at)
        AT TIME ZONE 'America/New_York')::date = %(day)s
 GROUP BY t.exec_id;

-- name: reconcile_break_subjects
-- The executions and orders that breaks name: an open break's fill is not yet booked, and an order a break names
-- may rightly differ from what the venue says of it.
SELECT exec_id, order_id, resolved_at IS NULL AS open FROM breaks;

-- name: reconcile_day_tombstoned
-- The orders ended here on a trading day once the venue said it never received them.
SELECT order_id FROM orders
 WHERE tombstoned_at IS NOT NULL AND (tombstoned_at AT TIME ZONE 'America/New_York')::date = %(day)s;

-- name: reconcile_orders_of
SELECT order_id, customer_id, sequence, status FROM orders WHERE order_id = ANY(%(order_ids)s);

-- Repairs (0014), for the operations service.

-- name: list_breaks
SELECT k.break_id, k.kind, k.exec_id, k.order_id, k.detail, k.recorded_at, k.resolved_at, k.resolution,
       k.resolved_by, k.resolution_note,
       EXISTS (SELECT 1 FROM transfers t WHERE t.break_id = k.break_id AND t.kind = 'error') AS booked_to_error_account
  FROM breaks k
 WHERE (%(include_resolved)s OR k.resolved_at IS NULL) AND (%(kind)s::text IS NULL OR k.kind = %(kind)s)
   AND (%(break_id)s::bigint IS NULL OR k.break_id = %(break_id)s)
   AND (%(after)s::bigint IS NULL
        OR (k.recorded_at, k.break_id) > (SELECT a.recorded_at, a.break_id FROM breaks a WHERE a.break_id = %(after)s))
 ORDER BY k.recorded_at, k.break_id
 LIMIT %(limit)s;

-- name: resolve_break
SELECT (r.resolved).break_id, r.repaired FROM resolve_break(%(break_id)s, %(resolution)s, %(operator)s, %(note)s) AS r;

-- name: redrive_waiting_order
SELECT * FROM redrive_waiting_order(%(order_id)s, %(operator)s, %(note)s);

-- name: end_lost_order
SELECT * FROM end_lost_order(%(order_id)s, %(reason)s, %(operator)s, %(note)s);

-- name: order_by_id
SELECT * FROM orders WHERE order_id = %(order_id)s;

-- ---------------------------------------------------------------------------------------------- risk controls

-- name: halts_in_force
-- The halts in force, as workers check orders against them before each send, and the risk desk lists them.
SELECT * FROM trading_halts WHERE cleared_at IS NULL ORDER BY halt_id DESC;

-- name: withhold_halted_claims
SELECT * FROM withhold_halted_claims(%(order_ids)s::text[]);

-- name: cancel_for_halts
SELECT * FROM cancel_for_halts(%(shards)s::integer[], %(limit)s);

-- name: set_trading_halt
SELECT (h.o_halt).*, h.o_set
  FROM set_trading_halt(%(scope)s, %(symbol)s, %(customer_id)s, %(reason)s, %(cancel_open_orders)s, %(issuer)s,
                        %(operator)s, %(peer)s) AS h;

-- name: clear_trading_halt
SELECT * FROM clear_trading_halt(%(halt_id)s, %(reason)s, %(issuer)s, %(operator)s, %(peer)s) WHERE halt_id IS NOT NULL;

-- name: list_trading_halts
-- The halts in force and, with include_cleared, the last cleared ones: newest first.
SELECT * FROM trading_halts
 WHERE cleared_at IS NULL OR %(include_cleared)s
 ORDER BY halt_id DESC
 LIMIT %(limit)s;

-- name: set_account_status
SELECT customer_id, account_status
  FROM set_account_status(%(customer_id)s, %(status)s, %(reason)s, %(issuer)s, %(operator)s, %(peer)s)
 WHERE customer_id IS NOT NULL;

-- name: set_limits
SELECT * FROM set_limits(%(customer_id)s, %(max_order_notional)s, %(max_order_quantity)s,
                         %(max_daily_buy_notional)s, %(max_orders_per_minute)s, %(reason)s, %(issuer)s,
                         %(operator)s, %(peer)s)
 WHERE customer_id IS NOT NULL;

-- name: get_limits
-- The limits in force for a customer (its own where set, the firm's elsewhere); none for an unknown customer.
SELECT l.* FROM limits_in_force(%(customer_id)s) l
 WHERE %(customer_id)s = '' OR EXISTS (SELECT 1 FROM balances b WHERE b.customer_id = %(customer_id)s);

-- name: engage_firm_threshold_halt
SELECT * FROM engage_firm_threshold_halt(%(threshold)s);

-- name: list_risk_events
-- Newest first, after the page token's event; the detail as its JSON text (numbers exact, never floats).
SELECT event_id, occurred_at, action, customer_id, symbol, halt_id, detail::text AS detail, reason, operator_issuer,
       operator, operator_peer
  FROM risk_events
 WHERE %(before)s::bigint IS NULL OR event_id < %(before)s
 ORDER BY event_id DESC
 LIMIT %(limit)s;
