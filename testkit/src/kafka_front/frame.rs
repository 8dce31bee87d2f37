//! Kafka frames as the front reads them before authentication and as it and the relay write
//! them: the size prefix, and the fixed-width fields at a frame's start the relay peeks at
//! (messages themselves are decoded by `kafka_wire`).

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

pub(crate) fn i16_at(b: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(crate) fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
