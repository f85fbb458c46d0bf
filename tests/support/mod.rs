//! What the tests and benchmarks share: fixtures from `tests/data`, AdmissionReviews
//! through the pure handler (`review`), and the real server over TLS (`server`).
//!
//! Every target declares it `pub mod support;`: the helpers are its public items, so a
//! target that uses only some of them is not told the others are dead.

pub mod pods;
pub mod review;
pub mod server;

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Reads `tests/data/<path>`, e.g. `pod-create.json` or `wire/malformed.json`.
pub fn fixture(path: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("failed to read {path}: {e}"))
}

/// A fixture as JSON.
pub fn fixture_json(path: &str) -> Value {
    serde_json::from_slice(&fixture(path)).expect("fixture is JSON")
}

/// How many ports [`free_port`] chooses from: those from 10,000 to 5,000 below the kernel's
/// ephemeral range (the 5,000 right below it are the cluster scripts', `free_ports` in
/// `cluster/lib.sh`).
const PORTS: u16 = 5_000;

/// A loopback TCP port free now, for a server started next to bind. It lies below the
/// kernel's ephemeral range (`net.ipv4.ip_local_port_range`), from which the system takes
/// the local port of every outgoing connection and of every bind to port 0: no connection
/// made meanwhile, by this test or another process, can take it before the server binds
/// it. Calls step through the range from a start drawn per process, so that they do not
/// hand out the same port twice.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let Some(low) = ephemeral.checked_sub(2 * PORTS).filter(|low| *low >= 1024) else {
        // No room below the range: a port from it, which a connection could still take.
        return TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
    };
    if NEXT.load(Ordering::Relaxed) == 0 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let start = (std::process::id() ^ nanos) % u32::from(PORTS);
        let _ = NEXT.compare_exchange(0, start as u16 + 1, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..PORTS {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = low + step % PORTS;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {low}..{}", low + PORTS);
}
