-- Small images kept in the embedded database itself, each stored in the same commit as the job
-- that names it: one synced write per upload instead of a synced file and then a synced commit
-- (see `storage::EmbeddedBlobStore`). `key` is the object key (`images/ab/abcd…`),
-- `stored_at` the last write in Unix milliseconds (the orphan sweep's clock).
create table images (
    key text primary key,
    bytes blob not null,
    stored_at integer not null
);
