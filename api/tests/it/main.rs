//! API integration tests: the whole service (API, worker, re-publisher) on real backends.

mod jobs;
mod models;
mod recovery;
mod support;
mod uploads;
mod webhooks;
