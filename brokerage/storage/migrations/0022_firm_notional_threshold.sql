-- The firm's credit threshold (issue 19): the gross notional of the buys the firm accepted today (the New York
-- trading day, as the customers' own), summed from counters spread over slots so that no two placement transactions
-- wait on one row (a connection writes the slot of its backend pid), and a firm-wide halt engaged by itself once the
-- sum reaches the threshold the operations service is configured with, once a day: an operator who clears it has
-- decided, and the threshold does not engage it again that day.

CREATE TABLE firm_buy_notional (
    day      date NOT NULL,
    slot     integer NOT NULL,
    notional numeric(20,4) NOT NULL DEFAULT 0 CHECK (notional >= 0),
    PRIMARY KEY (day, slot)
);

-- As 0019's, and adding the batch's accepted buy notional (at the protection price) to the day's counter, once per
-- batch, as its last write.
CREATE OR REPLACE FUNCTION place_orders_v3(
    p_order_ids text[],
    p_customer_ids text[],
    p_client_order_ids text[],
    p_symbols text[],
    p_sides text[],
    p_quantities bigint[],
    p_protection_prices numeric[],
    p_reference_prices numeric[],
    p_reject_codes text[],
    p_reject_reasons text[],
    p_subjects text[],
    p_payloads bytea[],
    p_expires_ats timestamptz[]
) RETURNS TABLE (placed orders, retry_after interval)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_placed  record;
    v_bought  numeric := 0;
BEGIN
    FOR i IN 1 .. cardinality(p_order_ids) LOOP
        SELECT * INTO v_placed FROM place_order_v3(
            p_order_ids[i], p_customer_ids[i], p_client_order_ids[i], p_symbols[i], p_sides[i], p_quantities[i],
            p_protection_prices[i], p_reference_prices[i], p_reject_codes[i], p_reject_reasons[i], p_subjects[i],
            p_payloads[i], p_expires_ats[i]);
        IF (v_placed.o_order).order_id = p_order_ids[i] AND (v_placed.o_order).status = 'PLACED'
           AND (v_placed.o_order).side = 'BUY' THEN
            v_bought := v_bought + (v_placed.o_order).quantity * (v_placed.o_order).protection_price;
        END IF;
        placed := v_placed.o_order;
        retry_after := v_placed.o_retry_after;
        RETURN NEXT;
    END LOOP;
    IF v_bought > 0 THEN
        INSERT INTO firm_buy_notional AS f (day, slot, notional)
        VALUES ((now() AT TIME ZONE 'America/New_York')::date, pg_backend_pid() % 16, v_bought)
        ON CONFLICT (day, slot) DO UPDATE SET notional = f.notional + EXCLUDED.notional;
    END IF;
END;
$$;

-- The day's accepted buy notional, and the firm halt engaged now if it reached p_threshold (none already in force,
-- none engaged by the threshold earlier today); o_halt_id null when nothing was engaged.
CREATE FUNCTION engage_firm_threshold_halt(p_threshold numeric, OUT o_notional numeric, OUT o_halt_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_day  date := (now() AT TIME ZONE 'America/New_York')::date;
    v_halt record;
BEGIN
    SELECT coalesce(sum(notional), 0) INTO o_notional FROM firm_buy_notional WHERE day = v_day;
    IF o_notional < p_threshold
       OR EXISTS (SELECT 1 FROM trading_halts WHERE scope = 'FIRM' AND cleared_at IS NULL)
       OR EXISTS (SELECT 1 FROM trading_halts WHERE set_by = 'daily-notional-threshold'
                     AND (set_at AT TIME ZONE 'America/New_York')::date = v_day) THEN
        RETURN;
    END IF;
    SELECT * INTO v_halt FROM set_trading_halt(
        'FIRM', NULL, NULL,
        format('the firm''s buys today came to %s, past the daily threshold of %s', format_money(o_notional),
               format_money(p_threshold)),
        false, 'urn:brokerage:operations-service', 'daily-notional-threshold', 'operations-service');
    o_halt_id := (v_halt.o_halt).halt_id;
END;
$$;

ALTER FUNCTION place_orders_v3(text[], text[], text[], text[], text[], bigint[], numeric[], numeric[], text[], text[],
                               text[], bytea[], timestamptz[]) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION engage_firm_threshold_halt(numeric) SECURITY DEFINER SET search_path = public, pg_temp;
GRANT EXECUTE ON FUNCTION engage_firm_threshold_halt(numeric) TO broker_operations;
GRANT SELECT ON firm_buy_notional TO broker_operations;
