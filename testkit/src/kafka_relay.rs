//! The front's relay between an authenticated client and its mock broker, frame by frame.
//!
//! The relay must see frame boundaries, because it rewrites two kinds of answers (Metadata, for
//! partitions made visible later and replicas reordered, and ApiVersions, for the APIs it adds)
//! and answers DescribeConfigs, AlterPartitionReassignments and ElectLeaders itself. It must not buffer whole frames otherwise: produce requests and fetch
//! responses reach about 100 MB, so every other frame is streamed through a fixed buffer as it
//! arrives, whatever its size.
//!
//! ```text
//!  client ── request ──> header noted by correlation id (Metadata, ApiVersions) ──> broker
//!         <── answer ─── DescribeConfigs, reassignments, elections answered here, never sent on
//!         <── response ─ noted id: read whole, rewritten (or left as is if it does not parse)
//!                        other ids: streamed as they arrive
//! ```

use std::collections::HashMap;
use std::io;
use std::sync::{Mutex, PoisonError};

use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::kafka_front::{Wire, i16_at, i32_at, write_frame};
use crate::kafka_wire::{
    API_DESCRIBE_CONFIGS, API_ELECT, API_METADATA, API_REASSIGN, API_VERSIONS, advertise, describe_configs, elect,
    own_versions, reassign, rewrite_metadata,
};

/// The largest frame read whole to be rewritten or answered. Metadata and ApiVersions responses
/// and DescribeConfigs requests are far smaller; a larger one is relayed unchanged rather than
/// held in memory.
const MAX_REWRITTEN_FRAME: usize = 16 << 20;
/// Read buffer of each direction; frames larger than it pass through it in pieces.
const RELAY_BUFFER: usize = 256 << 10;

/// Relays frames between `client` and `broker` until either side closes. Each request's API key
/// and version is noted by correlation id where its answer is rewritten, because a response names
/// only its correlation id.
pub(crate) async fn relay_frames<C, B>(client: C, broker: B, wire: &Wire) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (client_rx, client_tx) = tokio::io::split(client);
    let (broker_rx, mut broker_tx) = tokio::io::split(broker);
    let mut client_rx = BufReader::with_capacity(RELAY_BUFFER, client_rx);
    let mut broker_rx = BufReader::with_capacity(RELAY_BUFFER, broker_rx);
    // Both directions write to the client: the broker's responses and the front's own answers,
    // never interleaved within a frame.
    let client_tx = tokio::sync::Mutex::new(client_tx);
    let pending: Mutex<HashMap<i32, (i16, i16)>> = Mutex::default();
    let requests = async {
        loop {
            // Key, version, correlation id.
            let (len, head) = read_head(&mut client_rx, 8).await?;
            let (key, version, id) = (i16_at(&head, 0), i16_at(&head, 2), i32_at(&head, 4));
            match (key, version, id) {
                (Some(key @ (API_DESCRIBE_CONFIGS | API_REASSIGN | API_ELECT)), Some(_), Some(_))
                    if len <= MAX_REWRITTEN_FRAME =>
                {
                    let frame = read_rest(&mut client_rx, head, len).await?;
                    match answer_own(key, &frame, wire) {
                        Some(answer) => write_frame(&mut *client_tx.lock().await, &answer).await?,
                        None => write_frame(&mut broker_tx, &frame).await?,
                    }
                }
                (Some(key @ (API_METADATA | API_VERSIONS)), Some(version), Some(id)) => {
                    pending.lock().unwrap_or_else(PoisonError::into_inner).insert(id, (key, version));
                    forward(&mut client_rx, &mut broker_tx, len, &head).await?;
                }
                _ => forward(&mut client_rx, &mut broker_tx, len, &head).await?,
            }
        }
    };
    let responses = async {
        loop {
            // Correlation id.
            let (len, head) = read_head(&mut broker_rx, 4).await?;
            let asked =
                i32_at(&head, 0).and_then(|id| pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&id));
            let mut client_tx = client_tx.lock().await;
            match asked {
                Some((key, version)) if len <= MAX_REWRITTEN_FRAME => {
                    let frame = read_rest(&mut broker_rx, head, len).await?;
                    let rewritten = if key == API_METADATA {
                        let visible = wire.visible.lock().unwrap_or_else(PoisonError::into_inner).clone();
                        let preferred = wire.preferred.lock().unwrap_or_else(PoisonError::into_inner).clone();
                        rewrite_metadata(&frame, version, &visible, &preferred)
                    } else {
                        advertise(&frame, version, &own_versions())
                    };
                    write_frame(&mut *client_tx, rewritten.as_deref().unwrap_or(&frame)).await?;
                }
                _ => forward(&mut broker_rx, &mut *client_tx, len, &head).await?,
            }
        }
    };
    // Either side closing ends the connection.
    tokio::select! {
        r = requests => r,
        r = responses => r,
    }
}

/// The front's answer to a request of an API it answers itself (DescribeConfigs from the table,
/// a reassignment recorded, an election through the mock's leader control), or `None` when it
/// does not parse (the broker then refuses it as it would anyway).
fn answer_own(key: i16, frame: &[u8], wire: &Wire) -> Option<Vec<u8>> {
    match key {
        API_DESCRIBE_CONFIGS => describe_configs(frame, &wire.configs.lock().unwrap_or_else(PoisonError::into_inner)),
        API_REASSIGN => reassign(frame, &mut wire.preferred.lock().unwrap_or_else(PoisonError::into_inner)),
        _ => {
            let preferred = wire.preferred.lock().unwrap_or_else(PoisonError::into_inner).clone();
            elect(frame, &preferred, |topic, partition, broker| wire.elect(topic, partition, broker))
        }
    }
}

/// Reads a frame's size and up to `want` bytes of it: enough to tell what the frame is without
/// reading all of it.
async fn read_head<R: AsyncRead + Unpin>(r: &mut R, want: usize) -> io::Result<(usize, Vec<u8>)> {
    let len = r.read_i32().await?;
    let len = usize::try_from(len).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "negative frame size"))?;
    let mut head = vec![0; want.min(len)];
    r.read_exact(&mut head).await?;
    Ok((len, head))
}

/// Reads the rest of a frame whose `head` has been read.
async fn read_rest<R: AsyncRead + Unpin>(r: &mut R, mut head: Vec<u8>, len: usize) -> io::Result<Vec<u8>> {
    let at = head.len();
    head.resize(len, 0);
    r.read_exact(&mut head[at..]).await?;
    Ok(head)
}

/// Writes a frame's size and head, then streams the rest of it from `r` through `r`'s buffer.
async fn forward<R, W>(r: &mut R, w: &mut W, len: usize, head: &[u8]) -> io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let size = i32::try_from(len).map_err(|_| io::Error::other("frame too large"))?;
    let mut start = Vec::with_capacity(4 + head.len());
    start.extend_from_slice(&size.to_be_bytes());
    start.extend_from_slice(head);
    w.write_all(&start).await?;
    let rest = (len - head.len()) as u64;
    if tokio::io::copy_buf(&mut r.take(rest), w).await? != rest {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed inside a frame"));
    }
    w.flush().await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tokio::io::DuplexStream;

    use super::*;
    use crate::kafka_wire::tests::metadata_response;

    /// A running relay with the test holding the client's and the broker's ends.
    struct Ends {
        client: DuplexStream,
        broker: DuplexStream,
    }

    fn start(wire: Wire) -> Ends {
        let (client, front_client) = tokio::io::duplex(64 << 10);
        let (front_broker, broker) = tokio::io::duplex(64 << 10);
        tokio::spawn(async move { relay_frames(front_client, front_broker, &wire).await });
        Ends { client, broker }
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    /// A request with header v1 (empty client id) and `body`.
    fn request(key: i16, version: i16, id: i32, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in [key, version] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&0i16.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    /// `len` bytes counting 0, 1, .. `period - 1` over and over, so that a lost, repeated or
    /// reordered piece shows.
    fn patterned(len: usize, period: u8) -> Vec<u8> {
        let pattern: Vec<u8> = (0..period).collect();
        let mut out = vec![0; len];
        for chunk in out.chunks_mut(pattern.len()) {
            chunk.copy_from_slice(&pattern[..chunk.len()]);
        }
        out
    }

    async fn read_body<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Vec<u8>> {
        let len = usize::try_from(r.read_i32().await?).map_err(io::Error::other)?;
        let mut body = vec![0; len];
        r.read_exact(&mut body).await?;
        Ok(body)
    }

    fn visible(topic: &str, count: i32) -> Wire {
        let wire = Wire::default();
        wire.visible.lock().unwrap_or_else(PoisonError::into_inner).insert(topic.to_owned(), count);
        wire
    }

    #[tokio::test]
    async fn metadata_answers_are_rewritten_by_the_version_asked_for() -> io::Result<()> {
        let mut ends = start(visible("logs", 3));
        for version in [4, 12] {
            // The response builder answers correlation id 7.
            let asked = request(API_METADATA, version, 7, &[]);
            ends.client.write_all(&frame(&asked)).await?;
            assert_eq!(read_body(&mut ends.broker).await?, asked, "requests go on unchanged");
            ends.broker.write_all(&frame(&metadata_response(version, 6))).await?;
            assert_eq!(read_body(&mut ends.client).await?, metadata_response(version, 3), "version {version}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn unparsable_and_unrelated_frames_pass_unchanged() -> io::Result<()> {
        let mut ends = start(visible("logs", 3));
        // A Metadata answer that does not parse.
        ends.client.write_all(&frame(&request(API_METADATA, 12, 7, &[]))).await?;
        read_body(&mut ends.broker).await?;
        let garbage = [0, 0, 0, 7, 0xff, 0xff, 0xff];
        ends.broker.write_all(&frame(&garbage)).await?;
        assert_eq!(read_body(&mut ends.client).await?, garbage);
        // A request too short for a header, and a response to nothing noted that would parse as
        // Metadata: both unchanged.
        ends.client.write_all(&frame(&[1, 2, 3])).await?;
        assert_eq!(read_body(&mut ends.broker).await?, [1, 2, 3]);
        ends.broker.write_all(&frame(&metadata_response(12, 6))).await?;
        assert_eq!(read_body(&mut ends.client).await?, metadata_response(12, 6));
        Ok(())
    }

    #[tokio::test]
    async fn large_frames_stream_through_both_ways() -> io::Result<()> {
        let Ends { mut client, mut broker } = start(Wire::default());
        // A 100 MB produce request and fetch response, far larger than the relay's buffers and
        // the duplex pipes, so they must flow while still being written.
        let produce = [request(0, 9, 1, &[]), patterned(100 << 20, 251)].concat();
        let fetch = [2i32.to_be_bytes().to_vec(), patterned(100 << 20, 241)].concat();
        let (produce_frame, fetch_frame) = (frame(&produce), frame(&fetch));
        let (c_rx, mut c_tx) = tokio::io::split(&mut client);
        let (b_rx, mut b_tx) = tokio::io::split(&mut broker);
        let (sent, received, answered, got) = tokio::join!(
            c_tx.write_all(&produce_frame),
            async { read_body(&mut BufReader::new(b_rx)).await },
            b_tx.write_all(&fetch_frame),
            async { read_body(&mut BufReader::new(c_rx)).await },
        );
        sent?;
        answered?;
        assert!(received? == produce, "produce request changed on its way");
        assert!(got? == fetch, "fetch response changed on its way");
        Ok(())
    }

    #[tokio::test]
    async fn describe_configs_is_answered_by_the_front_and_api_versions_list_it() -> io::Result<()> {
        let wire = Wire::default();
        let configs = BTreeMap::from([("max.message.bytes".to_owned(), "1048588".to_owned())]);
        wire.configs.lock().unwrap_or_else(PoisonError::into_inner).insert("logs".to_owned(), configs);
        let mut ends = start(wire);
        // DescribeConfigs v1 for topic "logs", all names, with synonyms.
        let mut body = 1i32.to_be_bytes().to_vec();
        body.push(2);
        body.extend_from_slice(&4i16.to_be_bytes());
        body.extend_from_slice(b"logs");
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.push(1);
        ends.client.write_all(&frame(&request(API_DESCRIBE_CONFIGS, 1, 11, &body))).await?;
        let answer = read_body(&mut ends.client).await?;
        assert_eq!(i32_at(&answer, 0), Some(11));
        let value = b"\x00\x11max.message.bytes\x00\x071048588";
        assert!(answer.windows(value.len()).any(|w| w == value), "{answer:?}");
        // Nothing reached the broker: the next thing it sees is the ApiVersions request.
        let versions = request(API_VERSIONS, 2, 12, &[]);
        ends.client.write_all(&frame(&versions)).await?;
        assert_eq!(read_body(&mut ends.broker).await?, versions);
        // The broker's ApiVersions v2 answer (Metadata 0..12, throttle 0) gains DescribeConfigs.
        let mut listed = 12i32.to_be_bytes().to_vec();
        listed.extend_from_slice(&0i16.to_be_bytes());
        listed.extend_from_slice(&1i32.to_be_bytes());
        listed.extend_from_slice(&[0, 3, 0, 0, 0, 12]);
        listed.extend_from_slice(&0i32.to_be_bytes());
        ends.broker.write_all(&frame(&listed)).await?;
        let got = read_body(&mut ends.client).await?;
        assert_eq!(i32_at(&got, 6), Some(4));
        let (key, min, max) = own_versions()[0];
        assert_eq!(&got[16..22], [key.to_be_bytes(), min.to_be_bytes(), max.to_be_bytes()].concat());
        Ok(())
    }
}
