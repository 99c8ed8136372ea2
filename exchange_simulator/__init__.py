"""The exchange simulator: a venue implementing broker.v1.ExchangeService for development and tests.

It lists the demo stocks at seeded random-walk prices, acknowledges orders idempotently by our order id, fills
them in reproducible partial fills never beyond their protection price, and reports every execution to
CallbackService at least once, over a stream (or one call each; EXCHANGE_CALLBACK_STREAM), with optional chaos:
delays, reordering, duplicates, fills before the acknowledgement.

Its state is in memory: a restart forgets every order and report (a simulator needs no record; the backend's
sweeper sees `known = false` and treats the order as never received). Exec ids and venue order ids stay unique
across restarts anyway, because each carries the process's session id (a ULID, so later sessions sort later).
"""
