//! Token estimates for when the upstream reports no usage at all (records say `estimated`).
//!
//! Owns pulling the text out of a request or response body (JSON or SSE) and counting it with tiktoken's
//! o200k_base. Only called at the end of a response that carried no usage: never on the normal hot path.
//! Approximate by design (message framing tokens are not counted).

use bytes::Bytes;
use serde_json::Value;

use super::Tokens;

/// Text beyond this many bytes is not tokenised; its tokens are extrapolated from the part that was.
const MAX_TEXT: usize = 1 << 20;

/// Keys whose string values are text a model reads or writes, in every protocol this router speaks.
const TEXT_KEYS: &[&str] = &[
    "content",
    "text",
    "system",
    "input",
    "prompt",
    "instructions",
    "arguments",
    "partial_json",
    "thinking",
    "reasoning_content",
    "refusal",
    "delta",
];

/// Estimated tokens: `input` from the client's request body, `output` from the response body as forwarded
/// (`sse`: a text/event-stream body whose `data:` lines are JSON).
pub fn estimate(request: &[u8], response: &[Bytes], sse: bool) -> Tokens {
    let input = count(&json_text(request));
    let body: Vec<u8> = response.iter().flat_map(|b| b.iter().copied()).collect();
    let out_text = if sse {
        let mut text = String::new();
        for line in body.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(data) = line.strip_prefix(b"data:") {
                let data = data.trim_ascii_start();
                if data != b"[DONE]"
                    && let Ok(v) = serde_json::from_slice::<Value>(data)
                {
                    collect(&v, false, &mut text);
                }
            }
        }
        text
    } else {
        json_text(&body)
    };
    Tokens { input, output: count(&out_text), ..Default::default() }
}

/// The model-visible text of a JSON body; the body itself when it is not JSON.
fn json_text(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => {
            let mut s = String::new();
            collect(&v, false, &mut s);
            s
        }
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    }
}

/// Appends every string found under a text key (at any depth) to `out`.
fn collect(v: &Value, under_text_key: bool, out: &mut String) {
    match v {
        Value::String(s) if under_text_key && out.len() < MAX_TEXT * 2 => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(a) => a.iter().for_each(|x| collect(x, under_text_key, out)),
        Value::Object(m) => {
            for (k, x) in m {
                collect(x, TEXT_KEYS.contains(&k.as_str()), out);
            }
        }
        _ => {}
    }
}

/// o200k_base tokens of `text` (extrapolated past [`MAX_TEXT`] bytes).
pub fn count(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    let bpe = tiktoken_rs::o200k_base_singleton();
    if text.len() <= MAX_TEXT {
        return bpe.count_ordinary(text) as u64;
    }
    let mut cut = MAX_TEXT;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = bpe.count_ordinary(&text[..cut]) as f64;
    (head * text.len() as f64 / cut as f64).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_model_text_of_requests_and_responses() {
        let req = br#"{"model":"gpt-4o","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":[{"type":"text","text":"Say hello to the world"}]}]}"#;
        let resp =
            Bytes::from_static(br#"{"id":"x","choices":[{"message":{"role":"assistant","content":"Hello, world!"}}]}"#);
        let t = estimate(req, &[resp], false);
        // "You are terse." + "Say hello to the world" (+ newlines), "Hello, world!" (+ newline).
        assert!((7..=14).contains(&t.input), "{t:?}");
        assert!((4..=6).contains(&t.output), "{t:?}");
    }

    #[test]
    fn sse_streams_count_the_delta_text_across_chunks() {
        let a =
            Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\nda");
        let b = Bytes::from_static(b"ta: {\"choices\":[{\"delta\":{\"content\":\"lo there\"}}]}\n\ndata: [DONE]\n\n");
        let t = estimate(b"{}", &[a, b], true);
        assert!((2..=5).contains(&t.output), "{t:?}");
        assert_eq!(t.input, 0);
        // Anthropic and Responses deltas too.
        let an = Bytes::from_static(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"one two three\"}}\n\n",
        );
        assert!(estimate(b"", &[an], true).output >= 3);
        let rs = Bytes::from_static(b"data: {\"type\":\"response.output_text.delta\",\"delta\":\"one two three\"}\n\n");
        assert!(estimate(b"", &[rs], true).output >= 3);
    }

    #[test]
    fn non_json_bodies_are_counted_as_text() {
        assert!(count("plain words here") >= 3);
        assert_eq!(estimate(b"", &[], false), Tokens::default());
    }
}
