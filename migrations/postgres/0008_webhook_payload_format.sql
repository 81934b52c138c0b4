-- What a webhook endpoint's job deliveries carry: 'medinform', the JSON event
-- {"type", "timestamp", "data"} (every endpoint so far), or 'fhir-r4', the job's HL7 FHIR R4
-- Bundle. A delivery keeps the format it was made in, which says its Content-Type on every
-- attempt, whatever its endpoint says later.
alter table webhook_endpoints add column payload_format text not null default 'medinform'
    check (payload_format in ('medinform', 'fhir-r4'));
alter table webhook_deliveries add column payload_format text not null default 'medinform'
    check (payload_format in ('medinform', 'fhir-r4'));
