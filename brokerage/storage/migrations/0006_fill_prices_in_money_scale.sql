-- A fill price must be money as the books keep it: at most 4 decimals (numeric(20,4)), its amount below 1e16.
-- Otherwise each money column would round the amount on its own (a reservation would keep a residue no order
-- holds), or the booking would fail outright and the exchange resend the report forever. Such a fill is a
-- break: acknowledged, kept for an operator, and no money moves. The checks on the order's state are unchanged.
ALTER FUNCTION settlement_break(orders, text, bigint, numeric, bigint) RENAME TO settlement_break_of_state;

CREATE FUNCTION settlement_break(p_order orders, p_exec_type text, p_last_quantity bigint, p_last_price numeric,
                                 p_cumulative_quantity bigint) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_exec_type IN ('PARTIAL_FILL', 'FILL') AND p_last_quantity > 0 AND p_last_price > 0
       AND (p_last_price <> round(p_last_price, 4) OR p_last_quantity * p_last_price >= 1e16) THEN
        RETURN format('malformed_fill: %s at %s is not an amount the books can hold', p_last_quantity, p_last_price);
    END IF;
    RETURN settlement_break_of_state(p_order, p_exec_type, p_last_quantity, p_last_price, p_cumulative_quantity);
END;
$$;
