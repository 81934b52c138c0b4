-- Per-key token buckets (see the PostgreSQL migration); times in milliseconds since the epoch.
create table rate_limit_buckets (
    name text primary key,
    tokens real not null,
    updated_at integer not null
);
create index rate_limit_buckets_updated_idx on rate_limit_buckets (updated_at);
