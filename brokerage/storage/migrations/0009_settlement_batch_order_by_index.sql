-- A settlement batch put its reports in lock order by joining generate_subscripts(...) to orders on an array
-- element. The planner could not see that element as a key: it hashed every row of orders, on every batch, so
-- settlement slowed down as the table grew (4 ms a batch with 3,000 orders; linear beyond). unnest WITH ORDINALITY
-- joins on the order id itself: an index lookup per report.
CREATE OR REPLACE FUNCTION apply_execution_reports(
    p_exec_ids text[],
    p_order_ids text[],
    p_venue_order_ids text[],
    p_exec_types text[],
    p_last_quantities bigint[],
    p_last_prices numeric[],
    p_cumulative_quantities bigint[],
    p_reasons text[],
    p_transact_times timestamptz[],
    p_reports jsonb[]
) RETURNS TABLE (ordinal integer, outcome text, customer_id text, events_through bigint)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_next record;
    v_result record;
BEGIN
    FOR v_next IN
        SELECT r.i::integer AS i FROM unnest(p_order_ids) WITH ORDINALITY AS r (order_id, i)
          LEFT JOIN orders o USING (order_id)
         ORDER BY o.customer_id NULLS FIRST, r.i
    LOOP
        SELECT * INTO v_result FROM apply_execution_report(
            p_exec_ids[v_next.i], p_order_ids[v_next.i], p_venue_order_ids[v_next.i], p_exec_types[v_next.i],
            p_last_quantities[v_next.i], p_last_prices[v_next.i], p_cumulative_quantities[v_next.i],
            p_reasons[v_next.i], p_transact_times[v_next.i], p_reports[v_next.i]);
        RETURN QUERY SELECT v_next.i, v_result.outcome, v_result.customer_id, v_result.events_through;
    END LOOP;
END;
$$;
