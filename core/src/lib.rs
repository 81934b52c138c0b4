//! The MedInform domain: jobs, the model registry and inference, and the three backends
//! (job store, blob store, job queue) that the API and the worker share.
//!
//! Every backend concern is one trait with two implementations: a distributed one
//! (PostgreSQL, S3, RabbitMQ) and an embedded one (SQLite, a local folder, an in-process
//! queue). Which one runs is decided once, at start-up, by [`app::Backends::connect`].

pub mod app;
pub mod batch;
pub mod config;
pub mod cpu;
pub mod db;
pub mod fhir;
pub mod heatmap;
mod id;
pub mod imaging;
pub mod job;
pub mod metrics;
pub mod queue;
pub mod registry;
pub mod republish;
pub mod screening;
pub mod storage;
pub mod tenant;
pub mod view;
pub mod webhooks;
