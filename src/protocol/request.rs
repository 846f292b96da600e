//! What the router reads from a client request body, and the only edits it makes to it.
//!
//! Owns the borrowed peek at `model`, `stream`, `stream_options`, the output cap and which of the fields endpoints
//! require are present (no tree is built), and splicing a new
//! model id or `stream_options.include_usage` into the original bytes, leaving everything else untouched.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct PeekWire<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    stream: Option<bool>,
    #[serde(borrow)]
    stream_options: Option<&'a RawValue>,
    // Borrowed raw so an odd value (a float, a string) never makes the body unreadable: it is simply ignored.
    #[serde(borrow)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    max_output_tokens: Option<&'a RawValue>,
    // Only whether these are present (and not null): endpoints that need them answer 400 before routing.
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    #[serde(borrow)]
    prompt: Option<&'a RawValue>,
}

/// Which required fields a body carries (present and not `null`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Present {
    pub messages: bool,
    pub input: bool,
    pub prompt: bool,
    pub max_tokens: bool,
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// The routing view of a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peek {
    pub model: Option<String>,
    pub stream: bool,
    /// `stream_options.include_usage` as the client sent it.
    pub include_usage: bool,
    /// The output cap the client set: `max_tokens` (chat, messages), `max_completion_tokens` (chat) or
    /// `max_output_tokens` (responses), when it is a non-negative integer. Used for cost estimates only.
    pub max_output: Option<u64>,
    /// Which of `messages`, `input`, `prompt`, `max_tokens` the body has.
    pub present: Present,
    /// Byte range of the `model` value (including its quotes) in the body.
    model_span: Option<(usize, usize)>,
    /// Byte range of the `stream_options` value in the body.
    stream_options_span: Option<(usize, usize)>,
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PeekError {
    #[error("request body is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("`model` must be a string")]
    ModelNotString,
}

fn span(body: &[u8], raw: &RawValue) -> (usize, usize) {
    let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
    (start, start + raw.get().len())
}

impl Peek {
    pub fn parse(body: &[u8]) -> Result<Peek, PeekError> {
        let wire: PeekWire = serde_json::from_slice(body)?;
        let model = match wire.model {
            None => None,
            Some(raw) => Some(serde_json::from_str::<String>(raw.get()).map_err(|_| PeekError::ModelNotString)?),
        };
        let include_usage = wire
            .stream_options
            .and_then(|r| serde_json::from_str::<StreamOptions>(r.get()).ok())
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let cap = |r: Option<&RawValue>| r.and_then(|r| r.get().parse::<u64>().ok());
        let max_output =
            cap(wire.max_tokens).or_else(|| cap(wire.max_completion_tokens)).or_else(|| cap(wire.max_output_tokens));
        let set = |r: Option<&RawValue>| r.is_some_and(|r| r.get() != "null");
        let present = Present {
            messages: set(wire.messages),
            input: set(wire.input),
            prompt: set(wire.prompt),
            max_tokens: set(wire.max_tokens),
        };
        Ok(Peek {
            model,
            stream: wire.stream.unwrap_or(false),
            include_usage,
            max_output,
            present,
            model_span: wire.model.map(|r| span(body, r)),
            stream_options_span: wire.stream_options.map(|r| span(body, r)),
        })
    }

    /// The body with `model` replaced (when `new_model` differs) and, when `inject_usage`, with
    /// `stream_options.include_usage` set. Returns the original bytes untouched when nothing changes.
    pub fn rewrite(&self, body: &Bytes, new_model: Option<&str>, inject_usage: bool) -> Bytes {
        let model_edit = match (new_model, &self.model, self.model_span) {
            (Some(new), Some(old), Some(span)) if new != old => {
                Some((span, serde_json::to_string(new).expect("strings serialise")))
            }
            _ => None,
        };
        let usage_edit = if inject_usage && !self.include_usage {
            match self.stream_options_span {
                Some(span) => {
                    let mut opts: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_slice(&body[span.0..span.1]).unwrap_or_default();
                    opts.insert("include_usage".into(), true.into());
                    Some((span, serde_json::Value::Object(opts).to_string()))
                }
                None => None,
            }
        } else {
            None
        };
        let insert_options = inject_usage && !self.include_usage && self.stream_options_span.is_none();
        if model_edit.is_none() && usage_edit.is_none() && !insert_options {
            return body.clone();
        }
        let mut edits: Vec<((usize, usize), String)> = model_edit.into_iter().chain(usage_edit).collect();
        if insert_options {
            // Right after the opening brace.
            let open = body.iter().position(|&b| b == b'{').unwrap_or(0) + 1;
            let has_fields = body[open..].iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'}');
            let text = if has_fields {
                "\"stream_options\":{\"include_usage\":true},".to_string()
            } else {
                "\"stream_options\":{\"include_usage\":true}".to_string()
            };
            edits.push(((open, open), text));
        }
        edits.sort_by_key(|(s, _)| s.0);
        let mut out = BytesMut::with_capacity(body.len() + 64);
        let mut pos = 0;
        for ((start, end), text) in edits {
            out.extend_from_slice(&body[pos..start]);
            out.extend_from_slice(text.as_bytes());
            pos = end;
        }
        out.extend_from_slice(&body[pos..]);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn peeks_without_touching_the_rest() {
        let body = b(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi \"model\""}],"stream":true}"#);
        let p = Peek::parse(&body).unwrap();
        assert_eq!(p.model.as_deref(), Some("gpt-4o"));
        assert!(p.stream && !p.include_usage);
        assert_eq!(p.rewrite(&body, Some("gpt-4o"), false), body);
    }

    #[test]
    fn rewrites_model_in_place() {
        let body = b(r#"{"messages":[],"model" : "alias","temperature":0.2}"#);
        let p = Peek::parse(&body).unwrap();
        let out = p.rewrite(&body, Some("real/model"), false);
        assert_eq!(out, b(r#"{"messages":[],"model" : "real/model","temperature":0.2}"#));
    }

    #[test]
    fn injects_include_usage_when_absent_or_false() {
        let body = b(r#"{"model":"m","stream":true}"#);
        let p = Peek::parse(&body).unwrap();
        let out = p.rewrite(&body, Some("u"), true);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["model"], "u");

        let body = b(r#"{"model":"m","stream":true,"stream_options":{"include_usage":false,"x":1}}"#);
        let p = Peek::parse(&body).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&p.rewrite(&body, None, true)).unwrap();
        assert_eq!(v["stream_options"], serde_json::json!({"include_usage": true, "x": 1}));
    }

    #[test]
    fn rejects_bad_json_and_non_string_model() {
        assert!(matches!(Peek::parse(b"{nope"), Err(PeekError::Json(_))));
        assert!(matches!(Peek::parse(br#"{"model":3}"#), Err(PeekError::ModelNotString)));
    }

    #[test]
    fn sees_which_required_fields_are_present() {
        let p = |b: &str| Peek::parse(b.as_bytes()).unwrap().present;
        assert_eq!(
            p(r#"{"model":"m","messages":[],"max_tokens":5}"#),
            Present { messages: true, max_tokens: true, ..Default::default() }
        );
        assert_eq!(
            p(r#"{"model":"m","messages":null,"input":"x","prompt":["a"]}"#),
            Present { input: true, prompt: true, ..Default::default() }
        );
        assert_eq!(p(r#"{"model":"m"}"#), Present::default());
    }

    #[test]
    fn peeks_the_output_cap_and_ignores_odd_values() {
        let cap = |b: &str| Peek::parse(b.as_bytes()).unwrap().max_output;
        assert_eq!(cap(r#"{"model":"m","max_tokens":300}"#), Some(300));
        assert_eq!(cap(r#"{"model":"m","max_completion_tokens":50}"#), Some(50));
        assert_eq!(cap(r#"{"model":"m","max_output_tokens":7,"input":"x"}"#), Some(7));
        assert_eq!(cap(r#"{"model":"m","max_tokens":null}"#), None);
        assert_eq!(cap(r#"{"model":"m","max_tokens":12.5}"#), None);
        assert_eq!(cap(r#"{"model":"m","max_tokens":"many"}"#), None);
        assert_eq!(cap(r#"{"model":"m"}"#), None);
    }
}
