//! A minimal HTTP/1.0 GET for the programs' own loopback endpoints (`/status`, `/metrics`,
//! `/assignment`), and Prometheus text lookups; shared by tests, the demo and the benchmarks.

use std::io::{Read, Write};
use std::time::Duration;

use crate::{Result, TestkitError};

/// GETs `path` from `host` (`127.0.0.1:PORT`); returns the status code and body. HTTP/1.0, so
/// the answer is never chunked.
pub fn get(host: &str, path: &str) -> Result<(u16, String)> {
    let io = |e: std::io::Error| TestkitError::Io { what: format!("GET http://{host}{path}"), source: e };
    let mut s = std::net::TcpStream::connect(host).map_err(io)?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(io)?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").map_err(io)?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).map_err(io)?;
    let code = buf.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((code, buf.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

/// Sum of the samples of metric `name` in Prometheus text whose label text contains every
/// fragment of `labels`.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter(|l| labels.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn metric_sums_matching_samples() {
        let text =
            "# TYPE x gauge\nx{a=\"1\",d=\"tx\"} 2\nx{a=\"2\",d=\"tx\"} 3\nx{a=\"2\",d=\"rx\"} 5\nx_total 7\nxy 9\n";
        assert_eq!(super::metric(text, "x", &["tx"]), 5.0);
        assert_eq!(super::metric(text, "x", &["a=\"2\""]), 8.0);
        assert_eq!(super::metric(text, "x_total", &[]), 7.0);
    }
}
