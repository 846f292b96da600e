//! router: one local endpoint for many LLM upstream accounts.
//!
//! # Layout
//! - `protocol`: wire types, SSE, usage extraction, error shapes, translation. No I/O.

pub mod protocol;
