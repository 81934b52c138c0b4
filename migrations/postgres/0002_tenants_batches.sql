-- Tenants and their API keys; batches (screening sessions); the job fields that clients set
-- (tenant, batch, site, tags, deadline, webhook), a `canceled` status; idempotency keys.

create table tenants (
    id uuid primary key,
    name text not null unique,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

-- The tenant of the embedded single-machine mode (requests without a key on loopback) and of
-- every job that existed before tenants did.
insert into tenants (id, name) values ('00000000-0000-0000-0000-000000000000', 'local');

create table api_keys (
    id uuid primary key,
    tenant_id uuid not null references tenants (id),
    name text not null,
    -- The first characters of the key (`mik_1a2b3c4d`), shown in lists and logs.
    prefix text not null unique,
    -- SHA-256 (hex) of the whole key; the key itself is never stored.
    secret_sha256 text not null unique,
    -- A JSON array of scopes: "submit", "read", "admin".
    scopes jsonb not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    last_used_at timestamptz,
    revoked_at timestamptz
);

create index api_keys_tenant_idx on api_keys (tenant_id);

create table batches (
    id uuid primary key,
    tenant_id uuid not null references tenants (id),
    model text not null,
    site text,
    campaign text,
    operator text,
    client_reference text,
    tags jsonb not null default '[]',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    -- Set once every job of the batch is final (and the batch.completed event is due).
    completed_at timestamptz
);

create index batches_tenant_idx on batches (tenant_id, id desc);

alter table jobs
    add column tenant_id uuid not null default '00000000-0000-0000-0000-000000000000'
        references tenants (id),
    add column batch_id uuid references batches (id),
    add column site text,
    add column tags jsonb not null default '[]',
    add column deadline timestamptz,
    add column webhook_url text,
    drop constraint jobs_status_check,
    add constraint jobs_status_check
        check (status in ('queued', 'processing', 'succeeded', 'failed', 'canceled'));

alter table jobs alter column tenant_id drop default;

-- Listing is newest first by id (UUID v7: time-ordered), per tenant.
create index jobs_tenant_idx on jobs (tenant_id, id desc);
create index jobs_batch_idx on jobs (batch_id, id desc) where batch_id is not null;
create index jobs_reference_idx on jobs (tenant_id, client_reference)
    where client_reference is not null;

-- A POST retried with the same Idempotency-Key gets the first response back.
create table idempotency_keys (
    tenant_id uuid not null references tenants (id),
    key text not null,
    method text not null,
    path text not null,
    -- SHA-256 (hex) of the request body: the same key with another body is refused.
    request_sha256 text not null,
    -- Null while the first request is still being handled.
    status_code integer,
    response_headers jsonb,
    response_body bytea,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    expires_at timestamptz not null,
    primary key (tenant_id, key)
);

create index idempotency_keys_expiry_idx on idempotency_keys (expires_at);
