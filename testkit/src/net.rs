//! Loopback ports for the programs and servers under test.

use crate::{Result, io_err};

/// A port on 127.0.0.1 that was free a moment ago. Programs bind their own sockets, so another
/// process could take it in between; servers that can retry (etcd) do.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("bind 127.0.0.1:0"))?;
    Ok(l.local_addr().map_err(io_err("local_addr"))?.port())
}
