//! The partitions' fenced etcd writes, gathered (`coord::batch`), against a real etcd: many
//! partitions starting together cost a few requests, each transaction keeps its own condition
//! and answer, a request etcd refuses whole costs no transaction its answer, and commits advance
//! the offset only contiguously (`coord::commit`).

use az_core::TopicPartition;
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use zonal_transporter::coord::{self, Acquire, Batcher, CommitStart, Committed, Keys};

type Res<T = ()> = anyhow::Result<T>;

/// etcd's count of transaction requests (its gRPC server's metric).
fn txn_requests(etcd: &testkit::etcd::Etcd) -> Res<f64> {
    let host = etcd.endpoint().trim_start_matches("http://").to_owned();
    let (_, text) = testkit::http::get(&host, "/metrics")?;
    Ok(testkit::http::metric(&text, "grpc_server_handled_total", &[("grpc_method", "Txn")]))
}

fn partitions(n: i32) -> Vec<TopicPartition> {
    (0..n).map(|p| TopicPartition::new("logs", p)).collect()
}

/// 200 partitions taken at once by one worker: about four requests, not 200. A second worker
/// finds each held by the first; commits are fenced by owner and lease, one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_starting_together_share_requests_and_keep_their_own_fence() -> Res {
    let etcd = testkit::etcd::Etcd::start()?;
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await?;
    let (a, b) = (client.lease_grant(30, None).await?.id(), client.lease_grant(30, None).await?.id());
    let txns = Batcher::new(client.clone(), true);
    let keys = Keys::new("t");
    let tps = partitions(200);

    let before = txn_requests(&etcd)?;
    let taken = futures::future::join_all(tps.iter().map(|tp| coord::acquire(&txns, &keys, tp, "a", a))).await;
    let requests = txn_requests(&etcd)? - before;
    for (tp, t) in tps.iter().zip(taken) {
        assert_eq!(t?, Acquire::Acquired(Some(coord::Taken::default())), "{tp}");
    }
    // Four gathered requests of 64 at most, and up to one small one for each of the 16
    // request slots taken while the first jobs were still being queued.
    assert!(requests <= 24.0, "200 acquisitions took {requests} requests");

    let other = futures::future::join_all(tps.iter().map(|tp| coord::acquire(&txns, &keys, tp, "b", b))).await;
    for t in other {
        assert!(matches!(t?, Acquire::Owned { ref by, revision } if by == "a" && revision > 0));
    }
    // The owner's commits land; another worker's, and the owner's under another lease, do not.
    let started =
        futures::future::join_all(tps.iter().map(|tp| coord::commit_start(&txns, &keys, tp, "a", a, 0, None))).await;
    assert!(started.into_iter().all(|s| s.is_ok_and(|s| s == CommitStart::Done)));
    let commits = futures::future::join_all(tps.iter().enumerate().map(|(i, tp)| {
        let (me, lease) = match i % 3 {
            0 => ("a", a),
            1 => ("b", b),
            _ => ("a", b),
        };
        coord::commit(&txns, &keys, tp, me, lease, Some("0"), 7, None)
    }))
    .await;
    for (i, c) in commits.into_iter().enumerate() {
        let want = if i % 3 == 0 { Committed::Done } else { Committed::Fenced };
        assert_eq!(c?, want, "commit {i}");
    }
    let offsets = coord::offsets(&client, &keys).await?;
    assert_eq!(offsets.values().filter(|v| *v == "7").count(), 67);
    assert!(offsets.iter().all(|(tp, v)| (tp.partition % 3 == 0) == (v == "7")));

    // Offsets are committed only contiguously: an object must start at the committed offset.
    // The same commit sent again (its answer lost) is done; a stale or foreign start is not.
    let tp = &tps[0];
    assert_eq!(coord::commit(&txns, &keys, tp, "a", a, Some("0"), 7, None).await?, Committed::Done);
    let moved = Committed::Moved { recorded: Some("7".into()) };
    assert_eq!(coord::commit(&txns, &keys, tp, "a", a, Some("0"), 9, None).await?, moved);
    assert_eq!(coord::commit(&txns, &keys, tp, "a", a, Some("8"), 9, None).await?, moved);
    assert_eq!(coord::commit(&txns, &keys, tp, "a", a, Some("7"), 9, None).await?, Committed::Done);
    assert_eq!(coord::offsets(&client, &keys).await?.get(tp).map(String::as_str), Some("9"));
    // A first commit lands only where none is: a late copy of an earlier attempt is told where
    // the partition starts instead of moving it back, and another worker is fenced.
    let exists = CommitStart::Exists { offset: "9".into(), topic_id: None };
    assert_eq!(coord::commit_start(&txns, &keys, tp, "a", a, 3, None).await?, exists);
    assert_eq!(coord::commit_start(&txns, &keys, &tps[1], "b", b, 3, None).await?, CommitStart::Fenced);
    // An offset key removed while owned is put back by a commit that says so, and by no other.
    client.delete(keys.offset(tp), None).await?;
    let gone = Committed::Moved { recorded: None };
    assert_eq!(coord::commit(&txns, &keys, tp, "a", a, Some("9"), 11, None).await?, gone);
    assert_eq!(coord::commit(&txns, &keys, tp, "a", a, None, 11, None).await?, Committed::Done);
    assert_eq!(
        coord::commit(&txns, &keys, tp, "a", a, None, 12, None).await?,
        Committed::Moved { recorded: Some("11".into()) }
    );
    Ok(())
}

/// A request etcd refuses whole (one transaction names a lease that does not exist) is sent
/// again transaction by transaction: only the bad one fails. A request over etcd's
/// `--max-txn-ops` is sent again the same way, and later requests gather fewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_fails_only_its_bad_transaction_and_gathers_fewer_after_too_many_ops() -> Res {
    let etcd = testkit::etcd::Etcd::start()?;
    let client = etcd_client::Client::connect([etcd.endpoint()], None).await?;
    let txns = Batcher::new(client.clone(), true);
    let tps = partitions(20);
    let put = |tp: &TopicPartition, lease: Option<i64>| {
        let opts = lease.map(|l| PutOptions::new().with_lease(l));
        Txn::new().when([Compare::create_revision(format!("/k/{tp}"), CompareOp::Equal, 0)]).and_then([TxnOp::put(
            format!("/k/{tp}"),
            "v",
            opts,
        )])
    };
    let answers = futures::future::join_all(
        tps.iter().map(|tp| txns.txn(tp, put(tp, (tp.partition == 5).then_some(0x5eed_0000)))),
    )
    .await;
    for (tp, a) in tps.iter().zip(answers) {
        match a {
            Ok(a) => assert!(tp.partition != 5 && a.resp.succeeded() && a.revision > 0, "{tp}"),
            Err(e) => assert!(tp.partition == 5 && format!("{e:#}").contains("lease not found"), "{tp}: {e:#}"),
        }
    }

    // Transactions of 127 operations each: alone each is within etcd's 128, gathered each may
    // hold only 128 less the request's own count. They all land, one by one, and later requests
    // gather fewer.
    let big = |tp: &TopicPartition| {
        Txn::new().and_then((0..127).map(|i| TxnOp::put(format!("/big/{tp}/{i}"), "v", None)).collect::<Vec<_>>())
    };
    let tps = partitions(64);
    let answers = futures::future::join_all(tps.iter().map(|tp| txns.txn(tp, big(tp)))).await;
    assert!(answers.into_iter().all(|a| a.is_ok_and(|a| a.resp.succeeded())));
    let cap = txns.cap();
    assert!(cap < 64, "no request was refused");
    let before = txn_requests(&etcd)?;
    let small = |tp: &TopicPartition| Txn::new().and_then([TxnOp::put(format!("/small/{tp}"), "v", None)]);
    let answers = futures::future::join_all(tps.iter().map(|tp| txns.txn(tp, small(tp)))).await;
    assert!(answers.into_iter().all(|a| a.is_ok_and(|a| a.resp.succeeded())));
    let requests = txn_requests(&etcd)? - before;
    assert!(requests >= (64 / cap) as f64, "64 transactions in {requests} requests of at most {cap}");
    Ok(())
}

/// A request that times out (etcd stopped) fails every transaction it gathered: none is sent
/// again alone, which would multiply the load on an etcd that struggles and perhaps apply each
/// twice. The callers back off and try again themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_times_out_is_every_transactions_failure_and_is_not_sent_again() -> Res {
    let etcd = testkit::etcd::Etcd::start()?;
    let opts = etcd_client::ConnectOptions::new().with_timeout(std::time::Duration::from_secs(1));
    let client = etcd_client::Client::connect([etcd.endpoint()], Some(opts)).await?;
    let txns = Batcher::new(client, true);
    let tps = partitions(40);
    etcd.pause()?;
    let put = |tp: &TopicPartition| Txn::new().and_then([TxnOp::put(format!("/t/{tp}"), "v", None)]);
    let answers = futures::future::join_all(tps.iter().map(|tp| txns.txn(tp, put(tp)))).await;
    etcd.resume()?;
    assert!(answers.iter().all(Result::is_err), "a transaction got through a stopped etcd");
    // The gathered requests, not one more request per transaction.
    let requests = txns.requests();
    assert!(requests <= 20, "{requests} requests for 40 transactions: they were sent again one by one");
    assert_eq!(txns.cap(), 64, "a timeout says nothing about gathering");
    Ok(())
}

/// Without gathering (`etcd.gather-transactions` off), each transaction is a request of its
/// own, all in flight at once, and fenced as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_gathering_each_transaction_is_its_own_request() -> Res {
    let etcd = testkit::etcd::Etcd::start()?;
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await?;
    let a = client.lease_grant(30, None).await?.id();
    let txns = Batcher::new(client.clone(), false);
    let keys = Keys::new("t");
    let tps = partitions(50);
    let before = txn_requests(&etcd)?;
    let taken = futures::future::join_all(tps.iter().map(|tp| coord::acquire(&txns, &keys, tp, "a", a))).await;
    assert!(taken.into_iter().all(|t| t.is_ok_and(|t| t == Acquire::Acquired(Some(coord::Taken::default())))));
    assert_eq!(txn_requests(&etcd)? - before, 50.0);
    let again = coord::acquire(&txns, &keys, &tps[0], "b", a + 1).await?;
    assert!(matches!(again, Acquire::Owned { ref by, .. } if by == "a"));
    Ok(())
}
