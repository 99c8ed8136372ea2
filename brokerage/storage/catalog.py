"""What a database's schema is, read from its catalog in one canonical form: every table's columns and constraints,
every index, function, trigger, view, type and aggregate, the privileges granted on them (0017), and the rows of the
tables that are data of the schema (the transitions). Two databases with the same description have the same schema,
however each was built: the test that the migrations give exactly the snapshot (schema.sql) compares these."""

from __future__ import annotations

import psycopg

SCHEMA_DATA = {"order_transitions": "SELECT from_status, to_status FROM order_transitions ORDER BY 1, 2"}
_OURS = "n.nspname = 'public' AND c.relname NOT LIKE '%yoyo%'"

_QUERIES = {
    "column": f"""
        SELECT c.relname || '.' || row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),  -- dropped ones skipped
               format('%s %s%s%s%s%s', a.attname, format_type(a.atttypid, a.atttypmod),
                      CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END,
                      coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), ''),
                      CASE a.attgenerated WHEN 's' THEN ' GENERATED STORED' ELSE '' END,
                      CASE a.attidentity WHEN '' THEN '' ELSE ' IDENTITY ' || a.attidentity::text END)
          FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE {_OURS} AND c.relkind IN ('r', 'v', 'c') AND a.attnum > 0 AND NOT a.attisdropped""",
    "constraint": f"""
        SELECT c.relname || '.' || o.conname, pg_get_constraintdef(o.oid)
          FROM pg_constraint o JOIN pg_class c ON c.oid = o.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE {_OURS}""",
    "index": f"""
        SELECT c.relname, pg_get_indexdef(c.oid)
          FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE {_OURS}""",
    "function": """
        SELECT p.oid::regprocedure::text,
               CASE WHEN p.prokind = 'a' THEN format('aggregate %s state %s init %s', a.aggtransfn::regproc,
                                                    a.aggtranstype::regtype, a.agginitval)
                    ELSE pg_get_functiondef(p.oid) END
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          LEFT JOIN pg_aggregate a ON a.aggfnoid = p.oid
         WHERE n.nspname = 'public'""",
    "trigger": f"""
        SELECT c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid)
          FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE {_OURS} AND NOT t.tgisinternal""",
    "view": f"""
        SELECT c.relname, pg_get_viewdef(c.oid)
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {_OURS} AND c.relkind = 'v'""",
    # Privileges as sorted lists of aclitems (grantee=privileges/grantor), whatever order they were granted in; null
    # is the object type's default.
    "privileges on": f"""
        SELECT c.relname, coalesce(array_to_string(ARRAY(SELECT unnest(c.relacl)::text ORDER BY 1), ' '), 'default')
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE {_OURS} AND c.relkind IN ('r', 'v', 'S')""",
    "privileges on column": f"""
        SELECT c.relname || '.' || a.attname, array_to_string(ARRAY(SELECT unnest(a.attacl)::text ORDER BY 1), ' ')
          FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE {_OURS} AND a.attacl IS NOT NULL""",
    "privileges on function": """
        SELECT p.oid::regprocedure::text,
               coalesce(array_to_string(ARRAY(SELECT unnest(p.proacl)::text ORDER BY 1), ' '), 'default')
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'""",
    "default privileges": """
        SELECT format('%s %s in %s', d.defaclrole::regrole, d.defaclobjtype,
                      CASE d.defaclnamespace WHEN 0 THEN 'every schema'
                                                        ELSE d.defaclnamespace::regnamespace::text END),
               array_to_string(ARRAY(SELECT unnest(d.defaclacl)::text ORDER BY 1), ' ')
          FROM pg_default_acl d""",
    "relation": f"""
        SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE {_OURS} AND c.relkind IN ('r', 'v', 'c', 'S')""",
}


def describe(conn: psycopg.Connection) -> dict[str, str]:
    """The schema's description: a definition per named object (`kind name`), and the schema's data."""
    described: dict[str, str] = {}
    for kind, sql in _QUERIES.items():
        for name, definition in conn.execute(sql).fetchall():  # type: ignore[arg-type]
            described[f"{kind} {name}"] = definition
    for table, sql in SCHEMA_DATA.items():
        described[f"data {table}"] = repr(conn.execute(sql).fetchall())  # type: ignore[arg-type]
    return described
