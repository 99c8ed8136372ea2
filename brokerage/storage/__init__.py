"""PostgreSQL, the record: the connection pool, named queries, migrations and the stores built on them."""
