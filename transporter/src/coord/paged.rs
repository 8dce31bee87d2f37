//! Reading a prefix of etcd a page at a time, at one revision, so that no reply nears the
//! client's 4 MiB message limit however many keys the fleet holds (100,000 owners and offsets,
//! 1,000 registrations). A page the client still refuses as too large is read again in halves.
//!
//! ```text
//!  range(prefix) ──page 1 (limit n)──> its revision R
//!                ──page k (from the last key + 1, at R)──> ... until etcd says there is no more
//!  a reply over the client's limit ──> the same page with n / 2 (down to one key)
//!  R compacted meanwhile ──> the whole range again at the newest revision
//! ```

use anyhow::Context;
use etcd_client::{Client, GetOptions, KeyValue};

/// What to read from a prefix.
#[derive(Debug, Clone, Copy)]
pub struct RangeRead {
    /// Keys per page to start with; halved for a page whose reply is refused as too large.
    pub page: i64,
    /// Keys and revisions only, without values.
    pub keys_only: bool,
    /// Only keys modified at or after this revision (0: every key).
    pub min_mod_revision: i64,
    /// Read at this revision (0: the newest).
    pub revision: i64,
}

impl RangeRead {
    /// Every key and value, `page` keys at a time.
    pub fn values(page: i64) -> RangeRead {
        RangeRead { page, keys_only: false, min_mod_revision: 0, revision: 0 }
    }

    /// Every key without its value.
    pub fn keys(page: i64) -> RangeRead {
        RangeRead { page, keys_only: true, min_mod_revision: 0, revision: 0 }
    }
}

/// A prefix as read.
#[derive(Debug, Clone, Default)]
pub struct Ranged {
    /// Its keys (with values unless keys only), in key order.
    pub kvs: Vec<KeyValue>,
    /// The revision every page was read at.
    pub revision: i64,
    /// Requests sent.
    pub pages: usize,
    /// Bytes of keys and values in the largest reply (the reply's payload, which the client's
    /// message limit bounds with its framing).
    pub largest_reply: usize,
}

/// The end of the range of every key under `prefix` (etcd's rule: the prefix with its last byte
/// that can be incremented incremented, and what follows dropped).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range is open-ended.
    vec![0]
}

/// Reads every key under `prefix` as `how` says, a page at a time at one revision.
pub async fn range(client: &Client, prefix: &str, how: RangeRead) -> anyhow::Result<Ranged> {
    for _ in 0..3 {
        match range_once(client, prefix, how).await {
            Err(e) if compacted(&e) && how.revision == 0 => {
                tracing::debug!(prefix, "the revision of a paged read was compacted; reading again");
            }
            other => return other,
        }
    }
    range_once(client, prefix, how).await
}

async fn range_once(client: &Client, prefix: &str, how: RangeRead) -> anyhow::Result<Ranged> {
    let mut c = client.clone();
    let end = prefix_end(prefix.as_bytes());
    let mut from = prefix.as_bytes().to_vec();
    let mut out = Ranged { revision: how.revision, ..Ranged::default() };
    let mut limit = how.page.max(1);
    loop {
        let mut opts = GetOptions::new()
            .with_range(end.clone())
            .with_limit(limit)
            // No sort order: a range comes in key order anyway, and etcd reads the whole range
            // before it truncates to the limit when one is asked for.
            .with_revision(out.revision);
        if how.keys_only {
            opts = opts.with_keys_only();
        }
        if how.min_mod_revision > 0 {
            opts = opts.with_min_mod_revision(how.min_mod_revision);
        }
        out.pages += 1;
        let resp = match c.get(from.clone(), Some(opts)).await {
            Err(e) if too_large(&e) && limit > 1 => {
                limit /= 2;
                tracing::debug!(prefix, limit, "a page of etcd keys was over the client's limit; reading it in halves");
                continue;
            }
            other => other.with_context(|| format!("reading {prefix} from etcd ({limit} keys a page)"))?,
        };
        if out.revision == 0 {
            out.revision = resp.header().map_or(0, |h| h.revision());
        }
        let bytes: usize = resp.kvs().iter().map(|kv| kv.key().len() + kv.value().len()).sum();
        out.largest_reply = out.largest_reply.max(bytes);
        let more = resp.more();
        let mut resp = resp;
        let kvs = resp.take_kvs();
        match kvs.last() {
            Some(kv) if more => {
                from = kv.key().to_vec();
                from.push(0);
            }
            _ => {
                out.kvs.extend(kvs);
                return Ok(out);
            }
        }
        out.kvs.extend(kvs);
    }
}

/// Whether the client refused a reply for its size (tonic's decoding limit).
fn too_large(e: &etcd_client::Error) -> bool {
    // tonic answers a reply over its limit with "decoded message length too large" (code 11,
    // out of range, which etcd also uses for a compacted revision: the message tells them
    // apart), or code 8 (resource exhausted), named by number rather than a tonic dependency.
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() as i32 == 8
        || s.message().contains("message length too large"))
}

/// Whether a read failed because its revision was compacted away.
fn compacted(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.to_string().contains("required revision has been compacted"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_prefix_is_etcds() {
        assert_eq!(prefix_end(b"/c/workers/"), b"/c/workers0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }

    /// 2,000 keys of 3 KiB (6 MB, over the client's 4 MiB limit in one reply) read whole in
    /// pages that start too large and are halved, every page at the first page's revision.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_prefix_over_the_message_limit_is_read_whole_in_pages() {
        let etcd = testkit::Etcd::start().expect("etcd");
        let cfg = crate::config::EtcdConfig { endpoints: vec![etcd.endpoint()], ..Default::default() };
        let client = crate::coord::connect(&cfg).await.expect("connect");
        let mut c = client.clone();
        let value = vec![b'x'; 3 * 1024];
        for chunk in (0..2000).collect::<Vec<_>>().chunks(100) {
            let ops: Vec<_> =
                chunk.iter().map(|i| etcd_client::TxnOp::put(format!("/p/k{i:05}"), value.clone(), None)).collect();
            c.txn(etcd_client::Txn::new().and_then(ops)).await.expect("txn");
        }
        c.put("/p0", "outside", None).await.expect("put");
        let all = range(&client, "/p/", RangeRead::values(2000)).await.expect("range");
        assert_eq!(all.kvs.len(), 2000);
        assert!(all.kvs.windows(2).all(|w| w[0].key() < w[1].key()), "in key order, none twice");
        assert!(all.largest_reply < 4 * 1024 * 1024, "{}", all.largest_reply);
        assert!(all.pages > 2, "halved at least once: {} pages", all.pages);
        let keys = range(&client, "/p/", RangeRead::keys(500)).await.expect("keys");
        assert_eq!(keys.kvs.len(), 2000);
        assert!(keys.kvs.iter().all(|kv| kv.value().is_empty()));
        let since = RangeRead { min_mod_revision: all.revision, ..RangeRead::values(10) };
        c.put("/p/k00007", "changed", None).await.expect("put");
        let changed = range(&client, "/p/", since).await.expect("changed");
        assert_eq!(changed.kvs.len(), 1, "only what changed after the first read");
        assert_eq!(changed.kvs[0].value(), b"changed");
    }
}
