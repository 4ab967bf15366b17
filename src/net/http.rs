//! The HTTP side of the port: reading one request head with `httparse` (bounded in bytes and
//! time), answering the plain endpoints, and recognising WebSocket upgrades. It leaves the
//! WebSocket protocol itself to tungstenite and the endpoints' content to the server.

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::limits::{HTTP_BODY_BYTES_MAX, HTTP_HEADERS_MAX, HTTP_HEAD_BYTES_MAX};

/// One parsed request head, with the bytes read past it (the start of the body or of the first
/// WebSocket frame).
#[derive(Debug)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub rest: Vec<u8>,
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.header(name).is_some_and(|value| value.split(',').any(|item| item.trim().eq_ignore_ascii_case(token)))
    }

    /// A WebSocket upgrade request (RFC 6455 §4.2.1): GET, `Upgrade: websocket`,
    /// `Connection: Upgrade`, a valid key (16 bytes in base64) and version 13.
    pub fn websocket_key(&self) -> Option<&str> {
        let is_upgrade = self.method == "GET"
            && self.header_has_token("upgrade", "websocket")
            && self.header_has_token("connection", "upgrade")
            && self.header("sec-websocket-version").map(str::trim) == Some("13");
        if is_upgrade {
            self.header("sec-websocket-key").map(str::trim).filter(|key| is_valid_websocket_key(key))
        } else {
            None
        }
    }

    /// The path without its query string.
    pub fn route(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connection closed before a complete request head")]
    Closed,
    #[error("request head larger than {HTTP_HEAD_BYTES_MAX} bytes")]
    HeadTooLarge,
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("request body larger than the limit")]
    BodyTooLarge,
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads until a complete request head has arrived. The caller bounds the time it may take.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<RequestHead, HttpError> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(HttpError::Closed);
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(head) = parse_head(&buffer)? {
            return Ok(head);
        }
    }
}

/// Parses the bytes of a request received so far: `Some` head once it is complete (with the
/// bytes after it), `None` while more bytes may still complete it, an error when none can
/// (malformed, or more than `HTTP_HEAD_BYTES_MAX` bytes without a complete head).
pub fn parse_head(buffer: &[u8]) -> Result<Option<RequestHead>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; HTTP_HEADERS_MAX];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buffer) {
        // A read may carry the buffer from below the bound to past the end of a head longer
        // than it: the bound is on the head, not on where the reads happened to end.
        Ok(httparse::Status::Complete(head_len)) if head_len > HTTP_HEAD_BYTES_MAX => Err(HttpError::HeadTooLarge),
        Ok(httparse::Status::Complete(head_len)) => Ok(Some(RequestHead {
            method: request.method.unwrap_or("").to_string(),
            path: request.path.unwrap_or("").to_string(),
            headers: request
                .headers
                .iter()
                .map(|header| (header.name.to_string(), String::from_utf8_lossy(header.value).into_owned()))
                .collect(),
            rest: buffer[head_len..].to_vec(),
        })),
        Ok(httparse::Status::Partial) if buffer.len() < HTTP_HEAD_BYTES_MAX => Ok(None),
        Ok(httparse::Status::Partial) => Err(HttpError::HeadTooLarge),
        Err(error) => Err(HttpError::Malformed(error.to_string())),
    }
}

/// Whether `key` is a `Sec-WebSocket-Key` as RFC 6455 §4.2.1 has it: 16 bytes in base64.
pub fn is_valid_websocket_key(key: &str) -> bool {
    use base64::Engine;
    const KEY_BYTES: usize = 16;
    let mut decoded = [0u8; KEY_BYTES + 3];
    matches!(base64::engine::general_purpose::STANDARD.decode_slice(key, &mut decoded), Ok(KEY_BYTES))
}

/// Reads the body announced by `Content-Length` (at most `HTTP_BODY_BYTES_MAX`).
pub async fn read_body<S: AsyncRead + Unpin>(stream: &mut S, head: &mut RequestHead) -> Result<Vec<u8>, HttpError> {
    let length: usize = match head.header("content-length") {
        Some(value) => value.trim().parse().map_err(|_| HttpError::Malformed("bad Content-Length".into()))?,
        None => 0,
    };
    if length > HTTP_BODY_BYTES_MAX {
        return Err(HttpError::BodyTooLarge);
    }
    let mut body = std::mem::take(&mut head.rest);
    body.truncate(length);
    if body.len() < length {
        let start = body.len();
        body.resize(length, 0);
        stream.read_exact(&mut body[start..]).await?;
    }
    Ok(body)
}

/// Writes a complete response and flushes it; the connection closes afterwards.
pub async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason_phrase(status),
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await
}

/// Writes the `101 Switching Protocols` answer to a WebSocket upgrade.
pub async fn accept_websocket<S: AsyncWrite + Unpin>(stream: &mut S, key: &str) -> std::io::Result<()> {
    let accept = async_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<RequestHead, HttpError> {
        let mut cursor = futures_lite::io::Cursor::new(bytes.to_vec());
        futures_lite::future::block_on(read_head(&mut cursor))
    }

    // An upgrade request is recognised; extra bytes after the head are kept for the next layer.
    #[test]
    fn recognises_upgrades() {
        let head = parse(b"GET /ws?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nXY").unwrap();
        assert_eq!(head.route(), "/ws");
        assert_eq!(head.websocket_key(), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(head.rest, b"XY");
        let plain = parse(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(plain.websocket_key(), None);
    }

    // Garbage, truncated and oversized heads are errors, never panics.
    #[test]
    fn refuses_bad_heads() {
        assert!(matches!(parse(b"\x00\x01garbage\r\n\r\n"), Err(HttpError::Malformed(_))));
        assert!(matches!(parse(b"GET / HTTP/1.1\r\nHost"), Err(HttpError::Closed)));
        let mut huge = b"GET / HTTP/1.1\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'a', HTTP_HEAD_BYTES_MAX + 10));
        assert!(matches!(parse(&huge), Err(HttpError::HeadTooLarge) | Err(HttpError::Malformed(_))));
    }

    /// A client stream whose reads return at most `chunk` bytes, like a slow sender's segments.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        chunk: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buffer: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let len = (self.data.len() - self.at).min(self.chunk).min(buffer.len());
            buffer[..len].copy_from_slice(&self.data[self.at..self.at + len]);
            self.at += len;
            std::task::Poll::Ready(Ok(len))
        }
    }

    /// A complete head of exactly `len` bytes.
    fn head_of_len(len: usize) -> Vec<u8> {
        let mut head = b"GET /health HTTP/1.1\r\nX-Filler: ".to_vec();
        head.resize(len - 4, b'f');
        head.extend_from_slice(b"\r\n\r\n");
        head
    }

    // Regression (a property of the http_head fuzz target): a head longer than the bound was
    // accepted when a read carried the buffer from below the bound to past the head's end.
    // Method: heads just under, at and over the bound, read at once and in 1000-byte reads.
    #[test]
    fn head_bound_holds_whatever_the_reads() {
        for chunk in [1000, usize::MAX] {
            let read = |len: usize| {
                let mut stream = Trickle { data: head_of_len(len), at: 0, chunk };
                futures_lite::future::block_on(read_head(&mut stream))
            };
            assert!(read(HTTP_HEAD_BYTES_MAX - 1).is_ok(), "reads of {chunk}");
            assert!(read(HTTP_HEAD_BYTES_MAX).is_ok(), "reads of {chunk}");
            assert!(matches!(read(HTTP_HEAD_BYTES_MAX + 1), Err(HttpError::HeadTooLarge)), "reads of {chunk}");
            assert!(matches!(read(HTTP_HEAD_BYTES_MAX + 500), Err(HttpError::HeadTooLarge)), "reads of {chunk}");
        }
        assert!(matches!(parse_head(&head_of_len(HTTP_HEAD_BYTES_MAX + 1)), Err(HttpError::HeadTooLarge)));
    }

    // Regression (a property of the http_head fuzz target): an upgrade with an empty
    // `Sec-WebSocket-Key` was recognised. RFC 6455 §4.2.1: the key is 16 bytes in base64.
    #[test]
    fn an_upgrade_needs_a_valid_key() {
        let upgrade = |key: &str| {
            let head = format!(
                "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
            );
            parse_head(head.as_bytes()).unwrap().unwrap()
        };
        assert_eq!(upgrade(" dGhlIHNhbXBsZSBub25jZQ== ").websocket_key(), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        for bad in
            ["", "x", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZQ==AA==", "dGhlIHNhbXBsZSBub25jZTE=", "%%%%"]
        {
            assert_eq!(upgrade(bad).websocket_key(), None, "key {bad:?}");
        }
    }
}
