-- Screening jobs: one uploaded image screened by one model.
-- Ids are UUID text; times are Unix milliseconds (UTC), which order and compare exactly.
create table jobs (
    id text primary key,
    model text not null,
    model_version text not null,
    status text not null check (status in ('queued', 'processing', 'succeeded', 'failed')),
    image_key text not null,
    image_sha256 text not null,
    image_content_type text not null,
    image_bytes integer not null,
    client_reference text,
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

create index jobs_queued_idx on jobs (published_at, created_at) where status = 'queued';
create index jobs_processing_idx on jobs (lease_expires_at) where status = 'processing';
create index jobs_created_idx on jobs (created_at desc, id desc);
