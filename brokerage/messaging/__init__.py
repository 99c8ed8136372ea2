"""NATS JetStream: the connection, the ORDERS stream and the outbox relay that feeds it."""
