//! Kafka frames as the front reads them before authentication and as it and the relay write
//! them: the size prefix, the request header, and the few primitive fields the SASL exchange
//! reads from a request body.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Frames before authentication are small; anything larger is not a Kafka client.
const MAX_PREAUTH_FRAME: usize = 1 << 20;

/// Reads one whole frame (without its size) of at most [`MAX_PREAUTH_FRAME`] bytes.
pub(super) async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let len = r.read_i32().await?;
    let len = usize::try_from(len).ok().filter(|&l| (4..=MAX_PREAUTH_FRAME).contains(&l));
    let len = len.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad frame size"))?;
    let mut buf = vec![0; len];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Writes a whole frame (size, then `body`) and flushes it.
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> std::io::Result<()> {
    let len = i32::try_from(body.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    w.write_all(&out).await?;
    w.flush().await
}

/// A request header (v1: key, version, correlation id, client id) and where its body starts.
/// Only non-flexible requests are read past the header (header v2 of flexible ones has tagged
/// fields after the client id).
pub(crate) struct Header {
    pub(crate) api_key: i16,
    pub(crate) api_version: i16,
    pub(crate) correlation_id: i32,
    pub(crate) body: usize,
}

pub(crate) fn i16_at(b: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(crate) fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub(crate) fn parse_header(frame: &[u8]) -> Option<Header> {
    let client_id = i16_at(frame, 8)?;
    let body = 10 + usize::try_from(client_id.max(0)).ok()?;
    Some(Header { api_key: i16_at(frame, 0)?, api_version: i16_at(frame, 2)?, correlation_id: i32_at(frame, 4)?, body })
}

/// A non-nullable string (i16 length) at `at`.
pub(super) fn read_str(frame: &[u8], at: usize) -> Option<String> {
    let len = usize::try_from(i16_at(frame, at)?).ok()?;
    String::from_utf8(frame.get(at + 2..at + 2 + len)?.to_vec()).ok()
}

/// Bytes (i32 length) at `at`.
pub(super) fn read_bytes(frame: &[u8], at: usize) -> Option<Vec<u8>> {
    let len = usize::try_from(i32_at(frame, at)?).ok()?;
    Some(frame.get(at + 4..at + 4 + len)?.to_vec())
}
