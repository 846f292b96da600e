//! Incremental Server-Sent Events parsing and writing.
//!
//! Owns the byte-level SSE framing only: splitting an upstream byte stream into events (any chunking, `\n` or
//! `\r\n` line ends, a final event without its blank line flushed at EOF) and writing events back out. It knows
//! nothing about OpenAI or Anthropic payloads.

use bytes::{Bytes, BytesMut};

/// One SSE event. `data` lines are joined with `\n`, as the spec says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The joined `data:` fields.
    pub data: String,
}

impl SseEvent {
    /// An event with only a `data:` field (OpenAI style).
    pub fn data(data: impl Into<String>) -> Self {
        Self { event: None, data: data.into() }
    }

    /// An event with both `event:` and `data:` (Anthropic / Responses style).
    pub fn named(event: impl Into<String>, data: impl Into<String>) -> Self {
        Self { event: Some(event.into()), data: data.into() }
    }

    /// Writes the event in wire form, terminated by a blank line.
    pub fn write_to(&self, out: &mut BytesMut) {
        if let Some(event) = &self.event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(event.as_bytes());
            out.extend_from_slice(b"\n");
        }
        for line in self.data.split('\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\n");
        }
        out.extend_from_slice(b"\n");
    }

    /// The event in wire form.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.data.len() + 32);
        self.write_to(&mut out);
        out.freeze()
    }
}

/// Splits a byte stream into SSE events. Feed it chunks as they arrive; it keeps the incomplete tail.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    /// Offset in `buf` up to which lines have already been consumed.
    pos: usize,
    current: SseEvent,
    has_fields: bool,
    /// A `data:` line was seen for the current event (it may have been empty).
    data_seen: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a chunk and returns every event completed by it.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        self.feed_with(chunk, |ev| events.push(ev));
        events
    }

    /// Like [`feed`](Self::feed) but calls `on_event` for each completed event, without collecting them.
    pub fn feed_with(&mut self, chunk: &[u8], mut on_event: impl FnMut(SseEvent)) {
        self.buf.extend_from_slice(chunk);
        while let Some(nl) = memchr(b'\n', &self.buf[self.pos..]) {
            let end = self.pos + nl;
            let mut line = &self.buf[self.pos..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            self.pos = end + 1;
            if let Some(ev) = self.take_line(&line) {
                on_event(ev);
            }
        }
        // Compact once the consumed prefix dominates, so the buffer stays small for long streams.
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// Flushes an event left without its terminating blank line at end of stream.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.pos < self.buf.len() {
            let rest = String::from_utf8_lossy(&self.buf[self.pos..]).into_owned();
            self.buf.clear();
            self.pos = 0;
            let rest = rest.trim_end_matches('\r').to_string();
            if let Some(ev) = self.take_line(&rest) {
                return Some(ev);
            }
        }
        if self.has_fields {
            self.has_fields = false;
            self.data_seen = false;
            return Some(std::mem::take(&mut self.current));
        }
        None
    }

    /// Bytes received but not yet part of a complete event.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take_line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            if self.has_fields {
                self.has_fields = false;
                self.data_seen = false;
                return Some(std::mem::take(&mut self.current));
            }
            return None;
        }
        if line.starts_with(':') {
            return None; // comment / keep-alive
        }
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        match field {
            "event" => {
                self.current.event = Some(value.to_string());
                self.has_fields = true;
            }
            "data" => {
                if self.data_seen {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_fields = true;
                self.data_seen = true;
            }
            _ => {} // id, retry and unknown fields are not needed
        }
        None
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_arbitrary_chunks() {
        let wire = b"event: message_start\ndata: {\"a\":1}\n\n: ping\n\ndata: {\"b\":2}\r\n\r\ndata: [DONE]\n\n";
        for split in 1..wire.len() {
            let mut p = SseParser::new();
            let mut evs = p.feed(&wire[..split]);
            evs.extend(p.feed(&wire[split..]));
            assert_eq!(evs.len(), 3, "split at {split}");
            assert_eq!(evs[0], SseEvent::named("message_start", "{\"a\":1}"));
            assert_eq!(evs[1], SseEvent::data("{\"b\":2}"));
            assert_eq!(evs[2], SseEvent::data("[DONE]"));
        }
    }

    #[test]
    fn multi_line_data_is_joined() {
        let mut p = SseParser::new();
        let evs = p.feed(b"data: a\ndata: b\n\n");
        assert_eq!(evs, vec![SseEvent::data("a\nb")]);
    }

    #[test]
    fn final_event_without_blank_line_is_flushed() {
        let mut p = SseParser::new();
        assert!(p.feed(b"event: message_delta\ndata: {\"x\":1}").is_empty());
        assert_eq!(p.finish(), Some(SseEvent::named("message_delta", "{\"x\":1}")));
        assert_eq!(p.finish(), None);
    }

    #[test]
    fn round_trips_through_writer() {
        let ev = SseEvent::named("content_block_delta", "{\"t\":\"hi\"}");
        let mut p = SseParser::new();
        assert_eq!(p.feed(&ev.to_bytes()), vec![ev]);
    }
}
