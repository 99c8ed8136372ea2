-- The sweeper's re-drive of a lost cancel message had shared its "swept" mark with the question about silent
-- orders. An order with a cancel asked is at the exchange and often silent, so that question renewed the mark
-- before the cancel's limit could pass (every time, when the silent limit was the shorter one, as in a busy
-- shard): the cancel was never published again. It gets a mark of its own.
ALTER TABLE orders ADD COLUMN cancel_swept_at timestamptz;
