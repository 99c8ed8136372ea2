-- A malformed copy of a report and a good copy of it settled at the same moment (two settlement lanes, or two
-- CallbackService replicas) could leave a break open for an execution that was booked: the malformed copy's check
-- found no execution (the good copy's was not yet committed) and kept its break, while the good copy's supersede
-- step found no break (the malformed one's was not yet committed). Both now take a transaction lock on the exec_id
-- first, so one waits for the other's commit and then sees it: the good copy supersedes the break, or the malformed
-- copy finds the execution booked. Bodies replaced in place (same signatures); CREATE OR REPLACE resets a
-- function's SECURITY DEFINER and search_path, so 0017's are set again.

CREATE OR REPLACE FUNCTION supersede_malformed(p_exec_id text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('report:' || p_exec_id, 0));
    UPDATE breaks SET resolved_at = now(), resolution = 'superseded', resolved_by = 'settlement',
                      resolution_note = 'a well-formed copy of the report arrived'
     WHERE exec_id = p_exec_id AND kind IN ('malformed', 'refused') AND resolved_at IS NULL;
END;
$$;

CREATE OR REPLACE FUNCTION record_malformed_reports(
    p_break_keys text[], p_kinds text[], p_exec_ids text[], p_order_ids text[], p_details text[], p_reports bytea[]
) RETURNS TABLE (ordinal integer, outcome text)
LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. cardinality(p_break_keys) LOOP
        IF p_exec_ids[i] IS NOT NULL THEN
            PERFORM pg_advisory_xact_lock(hashtextextended('report:' || p_exec_ids[i], 0));
            IF EXISTS (SELECT 1 FROM executions e WHERE e.exec_id = p_exec_ids[i])
               OR EXISTS (SELECT 1 FROM breaks k WHERE k.break_key = p_exec_ids[i]) THEN
                RETURN QUERY SELECT i, 'duplicate';
                CONTINUE;
            END IF;
        END IF;
        INSERT INTO breaks (break_key, exec_id, order_id, kind, detail, report_bytes)
        VALUES (p_break_keys[i], p_exec_ids[i], p_order_ids[i], p_kinds[i], p_details[i], p_reports[i])
        ON CONFLICT (break_key) DO NOTHING;
        RETURN QUERY SELECT i, CASE WHEN FOUND THEN 'break' ELSE 'duplicate' END;
    END LOOP;
END;
$$;
ALTER FUNCTION record_malformed_reports(text[], text[], text[], text[], text[], bytea[])
    SECURITY DEFINER SET search_path = public, pg_temp;
