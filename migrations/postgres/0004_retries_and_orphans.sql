-- A job or batch created by a request with an Idempotency-Key carries a key derived from it
-- (the client's key, the request's fingerprint and the image's position): a request retried
-- after the process handling it died finds what it created instead of creating it again.
-- Null for requests without a key (nulls never conflict).
alter table jobs add column submission_key text;
create unique index jobs_submission_key_idx on jobs (tenant_id, submission_key);

alter table batches add column submission_key text;
create unique index batches_submission_key_idx on batches (tenant_id, submission_key);

-- The orphan sweep asks which stored images some job still refers to.
create index jobs_image_key_idx on jobs (image_key);
