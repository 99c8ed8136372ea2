-- A pause names the operator who made it (their token's subject and issuer), as every lever's record does. Added
-- nullable (expand): the previous release's pause writes no name, and a pause from before has none.
ALTER TABLE paused_shards ADD COLUMN paused_by text;
