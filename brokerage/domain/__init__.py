"""The domain: money, orders and their state table, placement rules, sharding. Pure Python, no I/O."""
