-- Requests still adding images to a batch, which keep it from completing (see the PostgreSQL
-- migration); `receiving_until` in Unix milliseconds.
alter table batches add column receivers integer not null default 0;
alter table batches add column receiving_until integer;
