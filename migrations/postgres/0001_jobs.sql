-- Screening jobs: one uploaded image screened by one model.
create table jobs (
    id uuid primary key,
    model text not null,
    model_version text not null,
    status text not null check (status in ('queued', 'processing', 'succeeded', 'failed')),
    image_key text not null,
    image_sha256 text not null,
    image_content_type text not null,
    image_bytes bigint not null,
    client_reference text,
    -- Claims so far; also the fencing token that makes the result be written once.
    attempts integer not null default 0,
    lease_expires_at timestamptz,
    -- Set when the broker confirmed the job's message; null means "publish it (again)".
    published_at timestamptz,
    result jsonb,
    error_code text,
    error_message text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    started_at timestamptz,
    finished_at timestamptz
);

create index jobs_queued_idx on jobs (published_at, created_at) where status = 'queued';
create index jobs_processing_idx on jobs (lease_expires_at) where status = 'processing';
create index jobs_created_idx on jobs (created_at desc, id desc);
