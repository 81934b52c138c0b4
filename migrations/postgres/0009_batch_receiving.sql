-- A batch is not complete while a request is still adding images to it: `receivers` counts
-- the requests (and DICOM associations) doing so, each of which keeps `receiving_until` ahead
-- of the clock while it runs. The first images of a large upload may be screened before the
-- last ones are stored; without this, the batch would be stamped complete, and announced,
-- with only those first images. A process that dies while receiving leaves its count behind;
-- once `receiving_until` has passed, the count no longer holds the batch.
alter table batches
    add column receivers integer not null default 0,
    add column receiving_until timestamptz;
