-- Webhooks: endpoints per tenant, the tenant's signing secret for per-job webhook_url
-- deliveries, and an outbox of deliveries with every attempt recorded.

-- Null: the job's final event is not yet fanned out into deliveries. Jobs that ended before
-- webhooks existed are stamped now, so that the first start does not announce old results.
alter table jobs add column events_enqueued_at timestamptz;
update jobs set events_enqueued_at = now()
    where status in ('succeeded', 'failed', 'canceled');
create index jobs_events_pending_idx on jobs (finished_at)
    where events_enqueued_at is null and status in ('succeeded', 'failed', 'canceled');

alter table batches add column events_enqueued_at timestamptz;
update batches set events_enqueued_at = now() where completed_at is not null;

create table webhook_endpoints (
    id uuid primary key,
    tenant_id uuid not null references tenants (id),
    url text not null,
    -- A JSON array of event types: "job.succeeded", "job.failed", ...
    event_types jsonb not null,
    description text,
    enabled boolean not null default true,
    -- Why the endpoint was disabled (by the service: a 410 Gone), shown by the API.
    disabled_reason text,
    -- `whsec_…`: signs every delivery; the previous one signs too until it expires (rotation).
    secret text not null,
    previous_secret text,
    previous_secret_expires_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create index webhook_endpoints_tenant_idx on webhook_endpoints (tenant_id, id);

-- One per tenant: signs deliveries to a job's own webhook_url.
create table webhook_signing_secrets (
    tenant_id uuid primary key references tenants (id),
    secret text not null,
    previous_secret text,
    previous_secret_expires_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create table webhook_deliveries (
    -- The `webhook-id` header (`msg_…`, time-ordered): the same on every attempt.
    id text primary key,
    tenant_id uuid not null references tenants (id),
    -- Null for a delivery to a job's own webhook_url.
    endpoint_id uuid references webhook_endpoints (id) on delete cascade,
    url text not null,
    event_type text not null,
    job_id uuid references jobs (id),
    batch_id uuid references batches (id),
    -- The exact bytes signed and sent, the same on every attempt.
    payload text not null,
    status text not null check (status in ('pending', 'succeeded', 'failed')),
    attempts integer not null default 0,
    -- When the next attempt is due (pending only).
    next_attempt_at timestamptz,
    -- A dispatcher holds the delivery while it sends it; another takes it once this passes.
    lease_expires_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create index webhook_deliveries_due_idx on webhook_deliveries (next_attempt_at)
    where status = 'pending';
create index webhook_deliveries_endpoint_idx on webhook_deliveries (endpoint_id, id desc);
create index webhook_deliveries_tenant_idx on webhook_deliveries (tenant_id, id desc);

create table webhook_attempts (
    id bigserial primary key,
    delivery_id text not null references webhook_deliveries (id) on delete cascade,
    attempted_at timestamptz not null,
    -- The HTTP status answered; null when none came (timeout, refused connection).
    response_status integer,
    latency_ms bigint not null,
    -- The first KiB of the response body.
    response_excerpt text,
    -- What went wrong without a response, or why the attempt was not made.
    error text
);

create index webhook_attempts_delivery_idx on webhook_attempts (delivery_id, id);
