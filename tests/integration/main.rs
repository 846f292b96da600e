//! The integration tests: one binary (the library and its database drivers are linked once, not once per area),
//! with a module per area. Every test drives the real `router` binary against mock upstreams on 127.0.0.1:0
//! through [`harness`]; unit tests live beside their code in src/.
//!
//! Run one area with `cargo test --test integration proxy::`, one test by (part of) its name.

#![allow(clippy::disallowed_methods, reason = "test clients talk to the router and mocks directly")]

mod harness;

mod admin;
mod affinity;
mod balance;
mod channels;
mod config_example;
mod dashboard;
mod discover;
mod disk;
mod failure;
mod gemini;
mod generated;
mod import;
mod keys;
mod loose;
mod metrics;
mod postgres;
mod probe;
mod proxy;
mod real_clients;
mod scaleout;
mod sdk;
mod settings;
mod store;
mod tags;
mod traces;
mod translate;
mod wire;
