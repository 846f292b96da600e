//! What the router reads from a client request body, and the only edits it makes to it.
//!
//! Owns the borrowed peek at `model`, `stream`, `stream_options`, the output cap and which fields endpoints require
//! are present (no tree is built), and splicing a new
//! model id or `stream_options.include_usage` into the original bytes, leaving everything else untouched. In the same
//! single pass it notes what identifies a conversation (`metadata.user_id`, `prompt_cache_key`) and where its stable
//! head lies (system / instructions, first user message) as byte ranges, read only when nothing better names the
//! session (see [`super::session`]).

use std::borrow::Cow;
use std::fmt;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
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
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow)]
    prompt_cache_key: Option<&'a RawValue>,
    /// Anthropic `system` (string or blocks).
    #[serde(borrow)]
    system: Option<&'a RawValue>,
    /// Responses `instructions`.
    #[serde(borrow)]
    instructions: Option<&'a RawValue>,
    /// Chat / Anthropic `messages`: only the first system and first user message are looked at.
    #[serde(borrow)]
    messages: Option<Head<'a>>,
    /// Responses `input` (a string, or items): likewise.
    #[serde(borrow)]
    input: Option<Head<'a>>,
    /// Gemini `contents` (items with `parts`): likewise.
    #[serde(borrow)]
    contents: Option<Head<'a>>,
    /// Gemini `systemInstruction` (a content object with `parts`).
    #[serde(borrow, rename = "systemInstruction", alias = "system_instruction")]
    system_instruction: Option<&'a RawValue>,
    /// Legacy completions `prompt`: only whether it is there.
    #[serde(borrow)]
    prompt: Option<&'a RawValue>,
}

/// Which required fields a body carries (present and not `null`): endpoints that need one answer 400 before
/// routing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Present {
    pub messages: bool,
    pub input: bool,
    pub prompt: bool,
    pub max_tokens: bool,
}

/// A piece of the body: a JSON value by reference, or (rarely) a string that had escapes, owned.
#[derive(Debug)]
enum Part<'a> {
    Raw(&'a RawValue),
    /// An unescaped string's content, borrowed from the body.
    Str(&'a str),
    Owned(String),
}

/// The first system-like and the first user message of a `messages` / `input` array, found while the array is
/// read once; the rest of it is skipped without building anything.
#[derive(Debug, Default)]
struct Head<'a> {
    system: Option<Part<'a>>,
    user: Option<Part<'a>>,
}

#[derive(Deserialize)]
struct Item<'a> {
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    /// Gemini's content (`parts`); a Gemini item without a role is the user's.
    #[serde(borrow)]
    parts: Option<&'a RawValue>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Head<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Head<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of messages")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Head<'a>, E> {
                Ok(Head { system: None, user: Some(Part::Str(v)) })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Head<'a>, E> {
                Ok(Head { system: None, user: Some(Part::Owned(v.to_string())) })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Head<'a>, A::Error> {
                let mut head = Head::default();
                while head.user.is_none() {
                    // An element that is not an object (odd input) is simply not a message.
                    let Some(item) = seq.next_element::<Option<ItemOrOther<'a>>>()? else { return Ok(head) };
                    let Some(ItemOrOther::Item(item)) = item else { continue };
                    match (item.role.as_deref(), item.content, item.parts) {
                        (Some("user"), Some(c), _) | (Some("user") | None, None, Some(c)) => {
                            head.user = Some(Part::Raw(c))
                        }
                        (Some("system" | "developer"), Some(c), _) if head.system.is_none() => {
                            head.system = Some(Part::Raw(c))
                        }
                        _ => {}
                    }
                }
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(head)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Head<'a>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Head::default())
            }
            fn visit_unit<E: de::Error>(self) -> Result<Head<'a>, E> {
                Ok(Head::default())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Head<'a>, E> {
                Ok(Head::default())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Head<'a>, E> {
                Ok(Head::default())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Head<'a>, E> {
                Ok(Head::default())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Head<'a>, E> {
                Ok(Head::default())
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A message object, or anything else (skipped).
enum ItemOrOther<'a> {
    Item(Item<'a>),
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for ItemOrOther<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: &'de RawValue = Deserialize::deserialize(d)?;
        if !raw.get().starts_with('{') {
            return Ok(ItemOrOther::Other);
        }
        Ok(serde_json::from_str::<Item<'de>>(raw.get()).map(ItemOrOther::Item).unwrap_or(ItemOrOther::Other))
    }
}

#[derive(Deserialize)]
struct Metadata<'a> {
    #[serde(borrow)]
    user_id: Option<Cow<'a, str>>,
}

/// Where a piece of the conversation's head is: a byte range of a JSON value in the body, or its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeadPart {
    Span(usize, usize),
    Text(String),
}

/// Where the conversation's stable head is in the body: the system prompt (Anthropic `system`, Responses
/// `instructions`, or the first system / developer message) and the first user message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HeadSpans {
    pub system: Option<HeadPart>,
    pub user: Option<HeadPart>,
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
    /// Anthropic `metadata.user_id` (Claude Code puts its session id in it).
    pub user_id: Option<String>,
    /// OpenAI `prompt_cache_key` (Chat and Responses; Codex sends its conversation id).
    pub prompt_cache_key: Option<String>,
    /// Where the conversation's head is, for a session hash when nothing names the session.
    pub(crate) head: HeadSpans,
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
        let string = |r: Option<&RawValue>| r.and_then(|r| serde_json::from_str::<String>(r.get()).ok());
        let user_id = wire
            .metadata
            .and_then(|m| serde_json::from_str::<Metadata>(m.get()).ok())
            .and_then(|m| m.user_id.map(Cow::into_owned));
        let part = |p: Part<'_>| match p {
            Part::Raw(r) => {
                let (a, b) = span(body, r);
                HeadPart::Span(a, b)
            }
            // Unescaped string content: its JSON value is the content with the quotes around it.
            Part::Str(s) => {
                let start = s.as_ptr() as usize - body.as_ptr() as usize;
                HeadPart::Span(start - 1, start + s.len() + 1)
            }
            Part::Owned(s) => HeadPart::Text(s),
        };
        let set = |r: Option<&RawValue>| r.is_some_and(|r| r.get() != "null");
        let present = Present {
            messages: wire.messages.is_some(),
            input: wire.input.is_some(),
            prompt: set(wire.prompt),
            max_tokens: set(wire.max_tokens),
        };
        let head = wire.messages.or(wire.input).or(wire.contents).unwrap_or_default();
        let system = wire.system.or(wire.instructions).or(wire.system_instruction).map(Part::Raw).or(head.system);
        let head = HeadSpans { system: system.map(part), user: head.user.map(part) };
        let cap = |r: Option<&RawValue>| r.and_then(|r| r.get().parse::<u64>().ok());
        let max_output =
            cap(wire.max_tokens).or_else(|| cap(wire.max_completion_tokens)).or_else(|| cap(wire.max_output_tokens));
        Ok(Peek {
            model,
            stream: wire.stream.unwrap_or(false),
            include_usage,
            max_output,
            present,
            model_span: wire.model.map(|r| span(body, r)),
            stream_options_span: wire.stream_options.map(|r| span(body, r)),
            user_id,
            prompt_cache_key: string(wire.prompt_cache_key),
            head,
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
