//! Gemini embedding requests (`:embedContent`, `:batchEmbedContents`) <-> OpenAI `/embeddings`.
//!
//! Owns both directions of the mapping: the texts of a Gemini `content` (its text parts, joined by newlines as
//! Google embeds them) become OpenAI `input` strings, `outputDimensionality` becomes `dimensions`; the OpenAI
//! `data[].embedding` vectors come back as `embedding.values` (one) or `embeddings[].values` (batch), in request
//! order. `taskType` and `title` have no OpenAI counterpart and are dropped. Must not do I/O.

use serde_json::{Map, Value, json};

use super::ConvertError;

/// The text of one Gemini `content` object: its text parts, newline-joined. Non-text parts cannot be embedded
/// by an OpenAI model.
fn content_text(content: Option<&Value>) -> Result<String, ConvertError> {
    let Some(content) = content else {
        return Err(ConvertError::Unsupported("`content` is required".into()));
    };
    let parts = content.get("parts").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let mut texts = Vec::with_capacity(parts.len());
    for part in parts {
        match part.get("text").and_then(Value::as_str) {
            Some(t) => texts.push(t),
            None => {
                return Err(ConvertError::Unsupported(
                    "only text parts can be embedded by a model of an OpenAI-compatible channel".into(),
                ));
            }
        }
    }
    if texts.is_empty() {
        return Err(ConvertError::Unsupported("`content.parts` holds no text to embed".into()));
    }
    Ok(texts.join("\n"))
}

fn dimensions(req: &Map<String, Value>) -> Option<u64> {
    req.get("outputDimensionality").and_then(Value::as_u64)
}

/// `:embedContent` (or, with `batch`, `:batchEmbedContents`) body -> OpenAI embeddings request.
pub fn request_to_openai(req: &Map<String, Value>, upstream_model: &str, batch: bool) -> Result<Value, ConvertError> {
    let (input, dims) = if batch {
        let requests = req
            .get("requests")
            .and_then(Value::as_array)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| ConvertError::Unsupported("`requests` must be a non-empty array".into()))?;
        let mut texts = Vec::with_capacity(requests.len());
        let mut dims: Option<Option<u64>> = None;
        for r in requests {
            let r = r.as_object().ok_or_else(|| ConvertError::Unsupported("each of `requests` is an object".into()))?;
            texts.push(Value::String(content_text(r.get("content"))?));
            let d = dimensions(r);
            if dims.is_some_and(|seen| seen != d) {
                return Err(ConvertError::Unsupported(
                    "`outputDimensionality` differs between requests; an OpenAI embeddings call takes one".into(),
                ));
            }
            dims = Some(d);
        }
        (Value::Array(texts), dims.flatten())
    } else {
        (Value::String(content_text(req.get("content"))?), dimensions(req))
    };
    let mut out = json!({"model": upstream_model, "input": input, "encoding_format": "float"});
    if let Some(d) = dims {
        out["dimensions"] = d.into();
    }
    Ok(out)
}

/// OpenAI embeddings response -> `{"embedding": {"values": [...]}}`, or with `batch` `{"embeddings": [...]}`.
pub fn response_from_openai(resp: &Map<String, Value>, batch: bool) -> Result<Value, ConvertError> {
    let data = resp
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| ConvertError::Unsupported("the embeddings response has no `data` array".into()))?;
    let mut items: Vec<(u64, &Value)> = Vec::with_capacity(data.len());
    for (i, d) in data.iter().enumerate() {
        let values = d
            .get("embedding")
            .filter(|v| v.is_array())
            .ok_or_else(|| ConvertError::Unsupported("an embedding is not an array of numbers".into()))?;
        items.push((d.get("index").and_then(Value::as_u64).unwrap_or(i as u64), values));
    }
    items.sort_by_key(|(i, _)| *i);
    if batch {
        let embeddings: Vec<Value> = items.into_iter().map(|(_, v)| json!({"values": v})).collect();
        Ok(json!({"embeddings": embeddings}))
    } else {
        let (_, values) =
            items.first().ok_or_else(|| ConvertError::Unsupported("the embeddings response is empty".into()))?;
        Ok(json!({"embedding": {"values": values}}))
    }
}

/// A native (Gemini channel) embedding body with the `model` fields it carries (top level, and each of a batch's
/// `requests`, which Google checks against the path) naming `models/{upstream_model}`. `None` when nothing
/// changes or the body is not an object (then it is forwarded as it came).
pub fn with_upstream_model(body: &[u8], upstream_model: &str) -> Option<Vec<u8>> {
    let Ok(Value::Object(mut req)) = serde_json::from_slice::<Value>(body) else { return None };
    let name = format!("models/{}", upstream_model.strip_prefix("models/").unwrap_or(upstream_model));
    let mut changed = false;
    let mut set = |m: &mut Map<String, Value>| {
        if let Some(v) = m.get_mut("model")
            && v.as_str() != Some(&name)
        {
            *v = Value::String(name.clone());
            changed = true;
        }
    };
    set(&mut req);
    if let Some(Value::Array(rs)) = req.get_mut("requests") {
        rs.iter_mut().filter_map(Value::as_object_mut).for_each(&mut set);
    }
    changed.then(|| serde_json::to_vec(&Value::Object(req)).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("object"),
        }
    }

    #[test]
    fn one_content_becomes_one_input_and_comes_back_as_values() {
        let req = obj(json!({
            "model": "models/text-embedding-004",
            "content": {"parts": [{"text": "Hello"}, {"text": "world"}]},
            "taskType": "RETRIEVAL_DOCUMENT",
            "outputDimensionality": 256
        }));
        let out = request_to_openai(&req, "text-embedding-3-small", false).unwrap();
        assert_eq!(
            out,
            json!({"model": "text-embedding-3-small", "input": "Hello\nworld", "encoding_format": "float", "dimensions": 256})
        );
        let resp =
            obj(json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -1.0]}],
            "usage": {"prompt_tokens": 2, "total_tokens": 2}}));
        assert_eq!(response_from_openai(&resp, false).unwrap(), json!({"embedding": {"values": [0.5, -1.0]}}));
    }

    #[test]
    fn a_batch_keeps_its_order_even_when_the_upstream_does_not() {
        let req = obj(json!({"requests": [
            {"model": "models/e", "content": {"parts": [{"text": "a"}]}},
            {"model": "models/e", "content": {"parts": [{"text": "b"}]}}
        ]}));
        let out = request_to_openai(&req, "e", true).unwrap();
        assert_eq!(out["input"], json!(["a", "b"]));
        assert!(out.get("dimensions").is_none());
        let resp = obj(json!({"data": [
            {"index": 1, "embedding": [2.0]},
            {"index": 0, "embedding": [1.0]}
        ]}));
        assert_eq!(
            response_from_openai(&resp, true).unwrap(),
            json!({"embeddings": [{"values": [1.0]}, {"values": [2.0]}]})
        );
    }

    #[test]
    fn native_bodies_name_the_upstream_model_everywhere_google_checks_it() {
        let body =
            br#"{"requests":[{"model":"models/alias","content":{"parts":[{"text":"a"}]}},{"model":"models/alias"}]}"#;
        let out: Value = serde_json::from_slice(&with_upstream_model(body, "text-embedding-004").unwrap()).unwrap();
        assert_eq!(out["requests"][0]["model"], "models/text-embedding-004");
        assert_eq!(out["requests"][1]["model"], "models/text-embedding-004");
        assert!(with_upstream_model(br#"{"model":"models/e","content":{}}"#, "e").is_none());
        assert!(with_upstream_model(br#"{"content":{}}"#, "e").is_none());
    }

    #[test]
    fn what_cannot_be_embedded_says_why() {
        let err = |v: Value, batch| request_to_openai(&obj(v), "e", batch).unwrap_err().to_string();
        assert!(err(json!({}), false).contains("`content` is required"));
        assert!(
            err(json!({"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": ""}}]}}), false)
                .contains("only text parts")
        );
        assert!(err(json!({"requests": []}), true).contains("non-empty"));
        assert!(
            err(
                json!({"requests": [
                    {"content": {"parts": [{"text": "a"}]}, "outputDimensionality": 8},
                    {"content": {"parts": [{"text": "b"}]}}
                ]}),
                true
            )
            .contains("differs")
        );
        assert!(response_from_openai(&obj(json!({"data": [{"embedding": "AAAA"}]})), false).is_err());
    }
}
