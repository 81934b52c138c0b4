-- What a webhook endpoint's job deliveries carry, and what each delivery is (see the
-- PostgreSQL migration).
alter table webhook_endpoints add column payload_format text not null default 'medinform'
    check (payload_format in ('medinform', 'fhir-r4'));
alter table webhook_deliveries add column payload_format text not null default 'medinform'
    check (payload_format in ('medinform', 'fhir-r4'));
