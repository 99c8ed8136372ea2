-- Least privilege (issue 17, DESIGN.md "Trust boundary"): the role that runs the migrations owns the schema, and each
-- service has a role of its own that may execute only its functions and read only its tables; nothing is granted to
-- PUBLIC. The grants are listed again, as the services need them, in brokerage/storage/grants.py, and
-- tests/integration/test_grants.py compares the two.
--
-- The service roles are group roles without a login: whoever deploys makes the login users that are members of them
-- (CloudNativePG's managed roles in Kubernetes, one Secret each; make run and the tests on their private clusters).
-- Roles belong to the cluster, not to a database, so one is made only where it does not exist yet (a deployment may
-- have made it first, so that the migration role needs no CREATEROLE).
--
-- The functions that write run as their owner (SECURITY DEFINER) with a fixed search_path, so a service moves money
-- only the way they do: no service role may insert, update or delete balances, positions, transfers, fundings or
-- repairs itself. The helpers they call run as the owner already and are granted to no one. What a service still
-- writes by itself is bookkeeping of its own: the shard count once, the workers' pauses, quotes and sweep marks (these
-- columns only), the relay's outbox rows.
--
-- Expand only: the previous release's pods keep connecting as the owner until they are replaced, and the owner keeps
-- every privilege. A later migration's new function is not executable by PUBLIC (the default privileges below, for
-- the role that runs the migrations) and is granted to its service in the same migration.

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['broker_orders', 'broker_execution', 'broker_callback', 'broker_operations',
                             'broker_reconcile'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- made meanwhile by another database's migration in the same cluster
            END;
        END IF;
    END LOOP;
END;
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM PUBLIC;
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- The functions the services call that write.
ALTER FUNCTION place_orders_v2(text[], text[], text[], text[], text[], bigint[], numeric[], text[], text[], bytea[],
                               timestamptz[]) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION cancel_order(text, text, text, bytea) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION claim_for_submissions(text[], integer[]) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION record_submissions(text[], text[], text[], boolean) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION record_venue_rejections(text[], text[], text[], boolean)
    SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION record_submit_failure(text, text, boolean, timestamptz, boolean)
    SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION end_unsent_order(text, text, boolean) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION expire_unclaimed_orders(integer[], text, integer) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION apply_execution_reports(text[], text[], text[], text[], bigint[], numeric[], bigint[], text[],
                                       timestamptz[], text[], text[], bigint[], boolean)
    SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION record_malformed_reports(text[], text[], text[], text[], text[], bytea[])
    SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION resolve_break(bigint, text, text, text) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION redrive_waiting_order(text, text, text) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION end_lost_order(text, text, text, text) SECURITY DEFINER SET search_path = public, pg_temp;

-- OrderService: places and cancels through its functions; reads its customers' orders, events, cash and positions,
-- the reference data and the shard count (recorded by the first process to start); the relay takes outbox rows.
GRANT EXECUTE ON FUNCTION place_orders_v2(text[], text[], text[], text[], text[], bigint[], numeric[], text[], text[],
                                          bytea[], timestamptz[]),
                          cancel_order(text, text, text, bytea) TO broker_orders;
GRANT SELECT ON orders, order_events, balances, positions, instruments, quotes TO broker_orders;
GRANT SELECT, INSERT ON shard_config TO broker_orders;
-- The relay's DELETE locks the rows it takes (FOR UPDATE SKIP LOCKED), which asks for UPDATE on some column.
GRANT SELECT, DELETE ON outbox TO broker_orders;
GRANT UPDATE (message_id) ON outbox TO broker_orders;

-- The workers: claim, record and end orders through their functions; the sweeper marks what it swept (these columns
-- only; a status changes only through the functions), the quote feed keeps the reference prices, the shard board
-- reads and (an operator's lever) sets the pauses.
GRANT EXECUTE ON FUNCTION claim_for_submissions(text[], integer[]),
                          record_submissions(text[], text[], text[], boolean),
                          record_venue_rejections(text[], text[], text[], boolean),
                          record_submit_failure(text, text, boolean, timestamptz, boolean),
                          end_unsent_order(text, text, boolean),
                          expire_unclaimed_orders(integer[], text, integer) TO broker_execution;
-- The sweeper's marks update orders, whose average fill price is a column generated by average_price(), evaluated as
-- the updating role (a pure function of the row).
GRANT EXECUTE ON FUNCTION average_price(numeric, bigint) TO broker_execution;
GRANT SELECT ON orders, instruments TO broker_execution;
GRANT UPDATE (swept_at, cancel_swept_at, sweep_count, cancel_sent_at) ON orders TO broker_execution;
GRANT SELECT, INSERT ON shard_config TO broker_execution;
GRANT SELECT, INSERT, UPDATE ON quotes TO broker_execution;
GRANT SELECT, INSERT, UPDATE, DELETE ON paused_shards TO broker_execution;

-- CallbackService: settles through its two functions, and reads nothing itself.
GRANT EXECUTE ON FUNCTION apply_execution_reports(text[], text[], text[], text[], bigint[], numeric[], bigint[],
                                                  text[], timestamptz[], text[], text[], bigint[], boolean),
                          record_malformed_reports(text[], text[], text[], text[], text[], bytea[]) TO broker_callback;

-- Reconciliation reads the books and what they must agree with, and changes nothing.
GRANT EXECUTE ON FUNCTION format_money(numeric), average_price(numeric, bigint),
                          holding_from_fills(text, bigint, numeric) TO broker_reconcile;
GRANT SELECT ON balances, positions, transfers, account_balances, fundings, repairs, orders, executions, breaks
    TO broker_reconcile;

-- The operations service: repairs through its functions, a drop copy's report booked through settlement's, and
-- reconciliation on demand, with reconciliation's reads. (Not as a member of broker_reconcile: granting a membership
-- takes CREATEROLE, which the migration role need not have.)
GRANT EXECUTE ON FUNCTION format_money(numeric), average_price(numeric, bigint),
                          holding_from_fills(text, bigint, numeric) TO broker_operations;
GRANT SELECT ON balances, positions, transfers, account_balances, fundings, repairs, orders, executions, breaks
    TO broker_operations;
GRANT EXECUTE ON FUNCTION apply_execution_reports(text[], text[], text[], text[], bigint[], numeric[], bigint[],
                                                  text[], timestamptz[], text[], text[], bigint[], boolean),
                          record_malformed_reports(text[], text[], text[], text[], text[], bytea[]),
                          resolve_break(bigint, text, text, text),
                          redrive_waiting_order(text, text, text),
                          end_lost_order(text, text, text, text) TO broker_operations;
