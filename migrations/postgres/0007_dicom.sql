-- The study a job's image belongs to, when it came as a DICOM file: the identifiers
-- (Study/Series/SOP Instance UID, Accession Number, Modality, Body Part Examined, Study Date, and
-- patient identity as the tenant's dicom.patient_data allows). Null otherwise.
alter table jobs add column dicom jsonb;
