"""The operations service: what operators call (brokerctl), never customers: the repairs of breaks and stuck orders,
each balanced transfers plus an audit row, and the day's reconciliation."""
