-- The lane a job waits in (see the PostgreSQL migration).
alter table jobs add column priority text not null default 'interactive'
    check (priority in ('interactive', 'bulk'));
update jobs set priority = 'bulk' where batch_id is not null;
