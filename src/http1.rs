//! HTTP/1.1 message bodies on the wire, both directions: how a body's end is found (`Content-Length`, chunked
//! with trailers, or the end of the connection) and the decoder that takes a body's data out of a read buffer.
//! The proxy's server (`proxy::h1`, request bodies) and its plain-HTTP client (`upstream::h1`, response bodies)
//! share it, and the reading of the header fields that decide framing (`Content-Length`, `Transfer-Encoding`,
//! `Connection`). Must not read or write sockets, nor decide what a malformed body means to the request.

use bytes::{Buf, Bytes, BytesMut};

/// The largest chunk-size line (with extensions) or trailer line accepted.
const MAX_LINE: usize = 4 << 10;

/// How the body's end is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// To the end of the connection.
    ToEnd,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk's data: this many bytes left.
    Data(u64),
    /// After a chunk's data, at its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailers,
}

/// What the buffered bytes give.
pub enum Step {
    Data(Bytes),
    /// The body is complete.
    End,
    /// More bytes must be read.
    More,
}

/// Takes the next piece of the body out of `buf` under `framing`.
pub fn step(framing: &mut Framing, buf: &mut BytesMut) -> Result<Step, &'static str> {
    loop {
        match framing {
            Framing::Length(0) => return Ok(Step::End),
            Framing::Length(left) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = (*left).min(buf.len() as u64) as usize;
                *left -= n as u64;
                return Ok(Step::Data(buf.split_to(n).freeze()));
            }
            Framing::ToEnd => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                return Ok(Step::Data(buf.split().freeze()));
            }
            Framing::Chunked(chunk) => match chunk {
                Chunk::Size => {
                    let Some(eol) = memchr::memmem::find(buf, b"\r\n") else {
                        return if buf.len() > MAX_LINE {
                            Err("a chunk-size line is too long")
                        } else {
                            Ok(Step::More)
                        };
                    };
                    let size = chunk_size(&buf[..eol])?;
                    buf.advance(eol + 2);
                    *chunk = if size == 0 { Chunk::Trailers } else { Chunk::Data(size) };
                }
                Chunk::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let n = (*left).min(buf.len() as u64) as usize;
                    *left -= n as u64;
                    let data = buf.split_to(n).freeze();
                    if *left == 0 {
                        *chunk = Chunk::DataEnd;
                    }
                    return Ok(Step::Data(data));
                }
                Chunk::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("a chunk does not end with CRLF");
                    }
                    buf.advance(2);
                    *chunk = Chunk::Size;
                }
                Chunk::Trailers => {
                    let Some(eol) = memchr::memmem::find(buf, b"\r\n") else {
                        return if buf.len() > MAX_LINE { Err("a trailer line is too long") } else { Ok(Step::More) };
                    };
                    buf.advance(eol + 2);
                    if eol == 0 {
                        *framing = Framing::Length(0);
                    }
                }
            },
        }
    }
}

/// A `Content-Length` value: digits only (RFC 9110 8.6), surrounding whitespace ignored.
pub fn content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Whether a `Transfer-Encoding` value's last coding is chunked (only then is the body framed by chunks).
pub fn ends_in_chunked(value: &[u8]) -> bool {
    value.rsplit(|b| *b == b',').next().is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Whether a comma-separated header value (`Connection`) has `token`, ASCII case ignored.
pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    value.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// A chunk-size line's size (extensions after `;` ignored).
fn chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let digits = line.split(|b| *b == b';').next().unwrap_or_default().trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err("a chunk size is not valid");
    }
    let mut n = 0u64;
    for d in digits {
        let v = (*d as char).to_digit(16).ok_or("a chunk size is not valid")?;
        n = n * 16 + u64::from(v);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed in two pieces split at `at`: the data, and whether the body ended.
    fn decode(mut framing: Framing, wire: &[u8], at: usize) -> Result<(Vec<u8>, bool), &'static str> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in [&wire[..at], &wire[at..]] {
            buf.extend_from_slice(piece);
            loop {
                match step(&mut framing, &mut buf)? {
                    Step::Data(d) => out.extend_from_slice(&d),
                    Step::End => return Ok((out, true)),
                    Step::More => break,
                }
            }
        }
        Ok((out, false))
    }

    #[test]
    fn chunked_bodies_decode_wherever_the_reads_split_them() {
        let wire = b"5;ext=1\r\nhello\r\n19\r\n, and twenty-five more b.\r\n0\r\nx-trailer: 1\r\n\r\n";
        for at in 0..=wire.len() {
            let (data, ended) = decode(Framing::Chunked(Chunk::Size), wire, at).unwrap();
            assert_eq!(data, b"hello, and twenty-five more b.", "split at {at}");
            assert!(ended, "split at {at}");
        }
        let (data, ended) = decode(Framing::Chunked(Chunk::Size), b"3\r\nabc\r\n", 4).unwrap();
        assert_eq!((data.as_slice(), ended), (&b"abc"[..], false), "no last chunk yet");
        assert!(decode(Framing::Chunked(Chunk::Size), b"zz\r\n", 4).is_err());
        assert!(decode(Framing::Chunked(Chunk::Size), b"3\r\nabcX\r\n", 9).is_err());
    }

    #[test]
    fn framing_fields_are_read_as_the_rfc_writes_them() {
        assert_eq!(content_length(b" 42 "), Some(42));
        assert_eq!(content_length(b"9999999999999999999"), Some(9_999_999_999_999_999_999));
        for bad in [&b""[..], b"x", b"-1", b"+1", b"1 2", b"99999999999999999999"] {
            assert_eq!(content_length(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert!(ends_in_chunked(b"gzip, Chunked") && !ends_in_chunked(b"chunked, gzip"));
        assert!(has_token(b"keep-alive, Close", b"close") && !has_token(b"closed", b"close"));
    }

    #[test]
    fn sized_bodies_end_at_their_length() {
        let (data, ended) = decode(Framing::Length(5), b"hello", 2).unwrap();
        assert_eq!((data.as_slice(), ended), (&b"hello"[..], true));
        let (data, ended) = decode(Framing::Length(0), b"", 0).unwrap();
        assert_eq!((data.as_slice(), ended), (&b""[..], true));
    }
}
