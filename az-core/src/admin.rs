//! The one place with `unsafe`: librdkafka's DescribeCluster and DescribeTopics admin calls,
//! which carry broker racks that the `rdkafka` crate's metadata API does not expose.
//!
//! ```text
//!  &Client ──> rd_kafka_DescribeCluster / rd_kafka_DescribeTopics (on the client's own
//!              connections, so TLS/SASL settings apply) ──> private queue ──> poll one event
//!          <── owned Rust values (RawBroker, RawTopic); every C object freed by a guard
//! ```
//!
//! Every call is blocking (it polls a queue); callers run it on a blocking thread.

use std::ffi::{CStr, CString, c_char};
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::client::Client;
use rdkafka_sys as sys;

/// A broker as DescribeCluster reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawBroker {
    pub id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
}

/// A partition as DescribeTopics reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawPartition {
    pub id: i32,
    pub leader: Option<i32>,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// A topic as DescribeTopics reports it; `error` is set for a topic that does not exist or is
/// not authorised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawTopic {
    pub name: String,
    /// The topic's id (base64, as Kafka's tools print it); `None` when the broker sent none.
    pub id: Option<String>,
    pub error: Option<String>,
    pub partitions: Vec<RawPartition>,
}

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    #[error("librdkafka refused to create the admin request: {0}")]
    Setup(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("broker answered with an error: {0}")]
    Broker(String),
    #[error("topic name {0:?} contains a NUL byte")]
    TopicName(String),
}

struct Guard<T, F: FnMut(*mut T)>(NonNull<T>, F);

impl<T, F: FnMut(*mut T)> Drop for Guard<T, F> {
    fn drop(&mut self) {
        (self.1)(self.0.as_ptr());
    }
}

fn guard<T, F: FnMut(*mut T)>(ptr: *mut T, free: F, what: &str) -> Result<Guard<T, F>, AdminError> {
    NonNull::new(ptr).map(|p| Guard(p, free)).ok_or_else(|| AdminError::Setup(format!("{what} returned NULL")))
}

/// Copies a C string owned by librdkafka; NULL becomes `None`.
///
/// Safety: `ptr` is NULL or a valid NUL-terminated string alive for the duration of the call.
unsafe fn opt_string(ptr: *const c_char) -> Option<String> {
    if ptr.is_null() {
        None
    } else {
        // SAFETY: non-null and valid per the caller's contract.
        Some(unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned())
    }
}

/// Views a librdkafka (pointer, count) array as a slice; NULL or zero gives an empty slice.
///
/// Safety: `ptr` points to `cnt` initialised elements alive for the returned lifetime.
unsafe fn array<'a, T>(ptr: *mut *const T, cnt: usize) -> &'a [*const T] {
    if ptr.is_null() || cnt == 0 {
        &[]
    } else {
        // SAFETY: per the caller's contract.
        unsafe { std::slice::from_raw_parts(ptr, cnt) }
    }
}

/// Node ids of a node array.
///
/// Safety: as for [`array`], with every element a valid `rd_kafka_Node_t`.
unsafe fn node_ids(ptr: *mut *const sys::rd_kafka_Node_t, cnt: usize) -> Vec<i32> {
    // SAFETY: per the caller's contract.
    unsafe { array(ptr, cnt) }
        .iter()
        .filter(|n| !n.is_null())
        // SAFETY: non-null node from librdkafka's result, alive while the event is.
        .map(|&n| unsafe { sys::rd_kafka_Node_id(n) })
        .collect()
}

fn timeout_ms(timeout: Duration) -> i32 {
    i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX).max(1)
}

/// Creates admin options for `op`, aimed at `broker` when given, with a request timeout.
fn options<C: ClientContext>(
    client: &Client<C>,
    op: sys::rd_kafka_admin_op_t,
    broker: Option<i32>,
    timeout: Duration,
) -> Result<Guard<sys::rd_kafka_AdminOptions_t, impl FnMut(*mut sys::rd_kafka_AdminOptions_t)>, AdminError> {
    // SAFETY: the client pointer is valid for as long as `client` is borrowed.
    let raw = unsafe { sys::rd_kafka_AdminOptions_new(client.native_ptr(), op) };
    // SAFETY: `p` came from rd_kafka_AdminOptions_new and is freed exactly once.
    let opts = guard(raw, |p| unsafe { sys::rd_kafka_AdminOptions_destroy(p) }, "rd_kafka_AdminOptions_new")?;
    let mut errstr = [0 as c_char; 512];
    // SAFETY: valid options and a writable error buffer of the stated size.
    let err = unsafe {
        sys::rd_kafka_AdminOptions_set_request_timeout(
            opts.0.as_ptr(),
            timeout_ms(timeout),
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    };
    if err != sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        // SAFETY: librdkafka NUL-terminates the buffer it was given.
        return Err(AdminError::Setup(unsafe { opt_string(errstr.as_ptr()) }.unwrap_or_default()));
    }
    if let Some(broker) = broker {
        // The mock cluster names broker 0 as controller, which does not exist; aiming admin
        // requests at a broker we know is alive works there and on real clusters alike.
        // SAFETY: as above.
        let err = unsafe {
            sys::rd_kafka_AdminOptions_set_broker(opts.0.as_ptr(), broker, errstr.as_mut_ptr(), errstr.len())
        };
        if err != sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            // SAFETY: as above.
            return Err(AdminError::Setup(unsafe { opt_string(errstr.as_ptr()) }.unwrap_or_default()));
        }
    }
    Ok(opts)
}

/// Runs one admin request (issued by `issue` onto the given queue) and hands its result event to
/// `read`, which must copy out everything it needs before returning.
fn run<C: ClientContext, R>(
    client: &Client<C>,
    timeout: Duration,
    issue: impl FnOnce(*mut sys::rd_kafka_queue_t),
    read: impl FnOnce(*mut sys::rd_kafka_event_t) -> Result<R, AdminError>,
) -> Result<R, AdminError> {
    // SAFETY: valid client pointer for the borrow's duration.
    let raw_queue = unsafe { sys::rd_kafka_queue_new(client.native_ptr()) };
    // SAFETY: the queue came from rd_kafka_queue_new and is destroyed once.
    let queue = guard(raw_queue, |q| unsafe { sys::rd_kafka_queue_destroy(q) }, "rd_kafka_queue_new")?;
    issue(queue.0.as_ptr());
    // The admin request has its own timeout; poll a little longer so that its timeout error,
    // which names the cause, arrives before ours.
    let wait = timeout + Duration::from_millis(500);
    // SAFETY: valid queue.
    let raw_event = unsafe { sys::rd_kafka_queue_poll(queue.0.as_ptr(), timeout_ms(wait)) };
    let Some(event) = NonNull::new(raw_event) else {
        return Err(AdminError::Timeout(wait));
    };
    // SAFETY: the event came from rd_kafka_queue_poll and is destroyed once, before the queue.
    let event = Guard(event, |e| unsafe { sys::rd_kafka_event_destroy(e) });
    // SAFETY: valid event.
    let code = unsafe { sys::rd_kafka_event_error(event.0.as_ptr()) };
    if code != sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        // SAFETY: valid event; the string lives as long as the event.
        let text = unsafe { opt_string(sys::rd_kafka_event_error_string(event.0.as_ptr())) };
        return Err(AdminError::Broker(text.unwrap_or_else(|| format!("{code:?}"))));
    }
    read(event.0.as_ptr())
}

/// Every broker of the cluster with its rack.
pub(crate) fn describe_cluster<C: ClientContext>(
    client: &Client<C>,
    broker: Option<i32>,
    timeout: Duration,
) -> Result<Vec<RawBroker>, AdminError> {
    let opts = options(client, sys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECLUSTER, broker, timeout)?;
    run(
        client,
        timeout,
        // SAFETY: valid client, options and queue; librdkafka copies the options.
        |queue| unsafe { sys::rd_kafka_DescribeCluster(client.native_ptr(), opts.0.as_ptr(), queue) },
        |event| {
            // SAFETY: a DescribeCluster result event; NULL if it is of another type.
            let result = unsafe { sys::rd_kafka_event_DescribeCluster_result(event) };
            if result.is_null() {
                return Err(AdminError::Broker("event is not a DescribeCluster result".into()));
            }
            let mut cnt = 0usize;
            // SAFETY: valid result; the array lives as long as the event.
            let nodes = unsafe { array(sys::rd_kafka_DescribeCluster_result_nodes(result, &mut cnt), cnt) };
            Ok(nodes
                .iter()
                .filter(|n| !n.is_null())
                // SAFETY: each node is valid while the event is; strings are copied out.
                .map(|&n| unsafe {
                    RawBroker {
                        id: sys::rd_kafka_Node_id(n),
                        host: opt_string(sys::rd_kafka_Node_host(n)).unwrap_or_default(),
                        port: sys::rd_kafka_Node_port(n),
                        rack: opt_string(sys::rd_kafka_Node_rack(n)).filter(|r| !r.is_empty()),
                    }
                })
                .collect())
        },
    )
}

/// Partitions of the given topics with leader, replicas and ISR.
pub(crate) fn describe_topics<C: ClientContext>(
    client: &Client<C>,
    topics: &[String],
    broker: Option<i32>,
    timeout: Duration,
) -> Result<Vec<RawTopic>, AdminError> {
    if topics.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<CString> = topics
        .iter()
        .map(|t| CString::new(t.as_str()).map_err(|_| AdminError::TopicName(t.clone())))
        .collect::<Result<_, _>>()?;
    let mut ptrs: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
    // SAFETY: `ptrs` holds valid strings (kept alive by `names`); librdkafka copies them.
    let raw = unsafe { sys::rd_kafka_TopicCollection_of_topic_names(ptrs.as_mut_ptr(), ptrs.len()) };
    // SAFETY: created above, destroyed once.
    let collection =
        guard(raw, |c| unsafe { sys::rd_kafka_TopicCollection_destroy(c) }, "rd_kafka_TopicCollection_of_topic_names")?;
    let opts = options(client, sys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS, broker, timeout)?;
    run(
        client,
        timeout,
        // SAFETY: valid client, collection, options and queue; librdkafka copies what it keeps.
        |queue| unsafe {
            sys::rd_kafka_DescribeTopics(client.native_ptr(), collection.0.as_ptr(), opts.0.as_ptr(), queue)
        },
        |event| {
            // SAFETY: a DescribeTopics result event; NULL if it is of another type.
            let result = unsafe { sys::rd_kafka_event_DescribeTopics_result(event) };
            if result.is_null() {
                return Err(AdminError::Broker("event is not a DescribeTopics result".into()));
            }
            let mut cnt = 0usize;
            // SAFETY: valid result; the array lives as long as the event.
            let descs = unsafe { array(sys::rd_kafka_DescribeTopics_result_topics(result, &mut cnt), cnt) };
            let mut out = Vec::with_capacity(descs.len());
            for &desc in descs.iter().filter(|d| !d.is_null()) {
                // SAFETY: every pointer below is owned by the event, which outlives this closure;
                // all data is copied into owned Rust values.
                let topic = unsafe {
                    let name = opt_string(sys::rd_kafka_TopicDescription_name(desc)).unwrap_or_default();
                    let err = sys::rd_kafka_TopicDescription_error(desc);
                    let error = if err.is_null()
                        || sys::rd_kafka_error_code(err) == sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                    {
                        None
                    } else {
                        Some(opt_string(sys::rd_kafka_error_string(err)).unwrap_or_else(|| "unknown error".into()))
                    };
                    let mut pcnt = 0usize;
                    let parts = array(sys::rd_kafka_TopicDescription_partitions(desc, &mut pcnt), pcnt);
                    let partitions = parts
                        .iter()
                        .filter(|p| !p.is_null())
                        .map(|&p| {
                            let leader = sys::rd_kafka_TopicPartitionInfo_leader(p);
                            let (mut rcnt, mut icnt) = (0usize, 0usize);
                            let replicas = sys::rd_kafka_TopicPartitionInfo_replicas(p, &mut rcnt);
                            let isr = sys::rd_kafka_TopicPartitionInfo_isr(p, &mut icnt);
                            RawPartition {
                                id: sys::rd_kafka_TopicPartitionInfo_partition(p),
                                leader: (!leader.is_null())
                                    .then(|| sys::rd_kafka_Node_id(leader))
                                    .filter(|&id| id >= 0),
                                replicas: node_ids(replicas, rcnt),
                                isr: node_ids(isr, icnt),
                            }
                        })
                        .collect();
                    let uuid = sys::rd_kafka_TopicDescription_topic_id(desc);
                    let id = (!uuid.is_null()
                        && (sys::rd_kafka_Uuid_most_significant_bits(uuid) != 0
                            || sys::rd_kafka_Uuid_least_significant_bits(uuid) != 0))
                        .then(|| opt_string(sys::rd_kafka_Uuid_base64str(uuid)))
                        .flatten();
                    RawTopic { name, id, error, partitions }
                };
                out.push(topic);
            }
            Ok(out)
        },
    )
}

/// Sets a client's OAUTHBEARER token (`msk_iam::prime`): the token, its expiry in milliseconds
/// since the epoch and the principal librdkafka logs. librdkafka's message when it refuses.
pub(crate) fn set_oauth_token<C: ClientContext>(
    client: &Client<C>,
    token: &str,
    expires_ms: i64,
    principal: &str,
) -> Result<(), String> {
    let token = CString::new(token).map_err(|e| e.to_string())?;
    let principal = CString::new(principal).map_err(|e| e.to_string())?;
    let mut err = [0 as c_char; 512];
    // SAFETY: the client pointer is valid for `client`'s lifetime; the strings outlive the
    // call (librdkafka copies them); no extensions are passed; `err` is a writable buffer of
    // the size given.
    let code = unsafe {
        sys::rd_kafka_oauthbearer_set_token(
            client.native_ptr(),
            token.as_ptr(),
            expires_ms,
            principal.as_ptr(),
            std::ptr::null_mut(),
            0,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if code == sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        Ok(())
    } else {
        // SAFETY: librdkafka writes a NUL-terminated message into `err`.
        Err(unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned())
    }
}
