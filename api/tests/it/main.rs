//! API integration tests: the whole service (API, worker, re-publisher) on real backends.

mod auth;
mod batches;
mod connections;
mod dicom;
mod dicom_scp;
mod dicomweb;
mod explain;
mod fhir;
mod jobs;
mod lanes;
mod listing;
mod metrics;
mod models;
mod recovery;
mod support;
mod uploads;
mod web;
mod webhooks;
