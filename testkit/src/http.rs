//! GET for the programs' own loopback endpoints (`/status`, `/metrics`, `/assignment`) with
//! reqwest, and Prometheus lookups on a real text-format parser (`prometheus-parse`) with labels
//! matched exactly; shared by tests, the demo and the benchmarks.
//!
//! ```text
//!  get(host, path) ──reqwest on testkit's own runtime (5 s)──> (status, body)
//!  metric(text, name, [(label, value)]) ──prometheus_parse::Scrape──> sum of the matching samples
//! ```

use std::sync::OnceLock;
use std::time::Duration;

use crate::{Result, TestkitError};

/// The client and the runtime it runs on, one for the process: callers are plain threads and
/// async tests alike (reqwest's blocking client cannot be made inside a runtime), so requests
/// run on a runtime of their own and the caller waits for the answer.
struct Http {
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

fn http() -> Result<&'static Http> {
    // Built once, by the first caller (the others wait): a runtime built twice would be
    // dropped by the loser, which panics inside an async test.
    static HTTP: OnceLock<std::result::Result<Http, String>> = OnceLock::new();
    HTTP.get_or_init(build)
        .as_ref()
        .map_err(|reason| TestkitError::Start { server: "http client", reason: reason.clone() })
}

fn build() -> std::result::Result<Http, String> {
    // The endpoints speak plain HTTP; reqwest is built (for az-core) with rustls but no default
    // crypto provider, so the TLS configuration it insists on is given, on aws-lc-rs.
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("testkit-http")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Http { client, runtime })
}

/// GETs `path` from `host` (`127.0.0.1:PORT`); returns the status code and body.
pub fn get(host: &str, path: &str) -> Result<(u16, String)> {
    let url = format!("http://{host}{path}");
    let h = http()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let request = h.client.get(&url);
    h.runtime.spawn(async move {
        let answer = async {
            let response = request.send().await?;
            let code = response.status().as_u16();
            Ok::<_, reqwest::Error>((code, response.text().await?))
        };
        let _ = tx.send(answer.await);
    });
    let io = |e: std::io::Error| TestkitError::Io { what: format!("GET {url}"), source: e };
    rx.recv().map_err(|e| io(std::io::Error::other(e)))?.map_err(|e| io(std::io::Error::other(e)))
}

/// Sum of the samples of metric `name` in Prometheus text whose labels include each of
/// `labels` exactly (name and value); other labels may be anything. A histogram's `_sum` and
/// `_count` are samples of their own name; its buckets are not summed here.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let Ok(scrape) = prometheus_parse::Scrape::parse(lines) else { return 0.0 };
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .filter_map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::metric;

    #[test]
    fn samples_are_summed_by_exact_labels() {
        let text = "# TYPE x gauge\nx{a=\"1\",d=\"tx\"} 2\nx{a=\"2\",d=\"tx\"} 3\nx{a=\"2\",d=\"rx\"} 5\n\
                    x{a=\"12\",d=\"tx\"} 11\n# TYPE y counter\ny_total 7\nxy 9\n\
                    # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n# EOF\n";
        assert_eq!(metric(text, "x", &[("d", "tx")]), 16.0);
        assert_eq!(metric(text, "x", &[("a", "2")]), 8.0, "a=\"12\" is not a=\"2\"");
        assert_eq!(metric(text, "x", &[("a", "1"), ("d", "rx")]), 0.0);
        assert_eq!(metric(text, "y_total", &[]), 7.0);
        assert_eq!(metric(text, "x", &[("zone", "tx")]), 0.0, "a value under another label does not match");
        assert_eq!((metric(text, "h_sum", &[]), metric(text, "h_count", &[])), (0.5, 2.0));
    }

    /// From a plain thread and from inside an async test alike.
    #[tokio::test]
    async fn get_reads_status_and_body_and_names_what_failed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = [0; 1024];
            let _ = s.read(&mut buf).expect("request");
            s.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 10\r\nconnection: close\r\n\r\nnot ready\n",
            )
            .expect("answer");
        });
        assert_eq!(super::get(&addr, "/readyz").expect("answered"), (503, "not ready\n".to_owned()));
        server.join().expect("server");
        let e = super::get(&addr, "/readyz").expect_err("nothing listens").to_string();
        assert!(e.contains(&format!("http://{addr}/readyz")), "{e}");
    }
}
