-- Tenants and their API keys; batches (screening sessions); the job fields that clients set
-- (tenant, batch, site, tags, deadline, webhook), a `canceled` status; idempotency keys.
-- Ids are UUID text; times are Unix milliseconds (UTC); JSON is text.

create table tenants (
    id text primary key,
    name text not null unique,
    created_at integer not null,
    updated_at integer not null
);

-- The tenant of the embedded single-machine mode (requests without a key on loopback) and of
-- every job that existed before tenants did.
insert into tenants (id, name, created_at, updated_at)
values ('00000000-0000-0000-0000-000000000000', 'local',
        cast((julianday('now') - 2440587.5) * 86400000 as integer),
        cast((julianday('now') - 2440587.5) * 86400000 as integer));

create table api_keys (
    id text primary key,
    tenant_id text not null references tenants (id),
    name text not null,
    -- The first characters of the key (`mik_1a2b3c4d`), shown in lists and logs.
    prefix text not null unique,
    -- SHA-256 (hex) of the whole key; the key itself is never stored.
    secret_sha256 text not null unique,
    -- A JSON array of scopes: "submit", "read", "admin".
    scopes text not null,
    created_at integer not null,
    updated_at integer not null,
    last_used_at integer,
    revoked_at integer
);

create index api_keys_tenant_idx on api_keys (tenant_id);

create table batches (
    id text primary key,
    tenant_id text not null references tenants (id),
    model text not null,
    site text,
    campaign text,
    operator text,
    client_reference text,
    tags text not null default '[]',
    created_at integer not null,
    updated_at integer not null,
    -- Set once every job of the batch is final (and the batch.completed event is due).
    completed_at integer
);

create index batches_tenant_idx on batches (tenant_id, id desc);

-- SQLite cannot change a check constraint: the jobs table is rebuilt with the new columns.
create table jobs_new (
    id text primary key,
    tenant_id text not null references tenants (id),
    batch_id text references batches (id),
    model text not null,
    model_version text not null,
    status text not null
        check (status in ('queued', 'processing', 'succeeded', 'failed', 'canceled')),
    image_key text not null,
    image_sha256 text not null,
    image_content_type text not null,
    image_bytes integer not null,
    client_reference text,
    site text,
    tags text not null default '[]',
    deadline integer,
    webhook_url text,
    -- Claims so far; also the fencing token that makes the result be written once.
    attempts integer not null default 0,
    lease_expires_at integer,
    -- Set when the job's message was handed to the queue; null means "publish it (again)".
    published_at integer,
    result text,
    error_code text,
    error_message text,
    created_at integer not null,
    updated_at integer not null,
    started_at integer,
    finished_at integer
);

insert into jobs_new (id, tenant_id, model, model_version, status, image_key, image_sha256,
    image_content_type, image_bytes, client_reference, attempts, lease_expires_at,
    published_at, result, error_code, error_message, created_at, updated_at, started_at,
    finished_at)
select id, '00000000-0000-0000-0000-000000000000', model, model_version, status, image_key,
    image_sha256, image_content_type, image_bytes, client_reference, attempts,
    lease_expires_at, published_at, result, error_code, error_message, created_at, updated_at,
    started_at, finished_at
from jobs;

drop table jobs;
alter table jobs_new rename to jobs;

create index jobs_queued_idx on jobs (published_at, created_at) where status = 'queued';
create index jobs_processing_idx on jobs (lease_expires_at) where status = 'processing';
create index jobs_created_idx on jobs (created_at desc, id desc);
-- Listing is newest first by id (UUID v7: time-ordered), per tenant.
create index jobs_tenant_idx on jobs (tenant_id, id desc);
create index jobs_batch_idx on jobs (batch_id, id desc) where batch_id is not null;
create index jobs_reference_idx on jobs (tenant_id, client_reference)
    where client_reference is not null;

-- A POST retried with the same Idempotency-Key gets the first response back.
create table idempotency_keys (
    tenant_id text not null references tenants (id),
    key text not null,
    method text not null,
    path text not null,
    -- SHA-256 (hex) of the request body: the same key with another body is refused.
    request_sha256 text not null,
    -- Null while the first request is still being handled.
    status_code integer,
    response_headers text,
    response_body blob,
    created_at integer not null,
    updated_at integer not null,
    expires_at integer not null,
    primary key (tenant_id, key)
);

create index idempotency_keys_expiry_idx on idempotency_keys (expires_at);
