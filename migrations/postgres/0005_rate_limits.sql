-- Per-key token buckets shared by every API process: a request takes a token, a bucket refills
-- at auth.rate_limit_per_minute up to auth.rate_limit_burst. A full bucket is the same as no
-- row, so rows untouched for an hour are deleted.
create table rate_limit_buckets (
    name text primary key,
    tokens double precision not null,
    updated_at timestamptz not null
);
create index rate_limit_buckets_updated_idx on rate_limit_buckets (updated_at);
