-- The lane a job waits in: interactive (a single upload) goes ahead of bulk (a batch's images,
-- or an upload that asked for priority=bulk). Jobs of batches made before this are bulk.
alter table jobs add column priority text not null default 'interactive'
    check (priority in ('interactive', 'bulk'));
update jobs set priority = 'bulk' where batch_id is not null;
