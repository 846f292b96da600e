//! Wire protocols: what the router must understand of OpenAI, Anthropic and Gemini traffic.
//!
//! Owns per-protocol wire types (only the fields routing and accounting need), SSE framing, usage extraction,
//! error bodies in each protocol's shape, translation between protocols, and which conversation a request belongs
//! to (`session`). Must not do I/O.

pub mod convert;
pub mod errors;
pub mod request;
pub mod session;
pub mod sse;
pub mod usage;

/// The protocol a client speaks (by path) or a channel speaks upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// OpenAI-compatible HTTP API (chat completions, responses, embeddings).
    Openai,
    /// Anthropic Messages API.
    Anthropic,
    /// Google Gemini API (`generateContent`, `streamGenerateContent`, `countTokens`).
    Gemini,
}

impl Protocol {
    /// The name used in records, errors and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Openai => "openai",
            Protocol::Anthropic => "anthropic",
            Protocol::Gemini => "gemini",
        }
    }
}
