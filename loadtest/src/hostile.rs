//! Hostile connection patterns against a pm-scheduler, measured:
//!
//! - `slowloris --count N [--mode silent|partial]`: N connections that never finish their handshake (they
//!   send nothing, or half of a frame's length prefix), opened while the ordinary fixed-rate workload runs.
//!   Reports the workload's latency without them (a baseline run first) and with them, how many of them the
//!   server closed (its handshake timeout) and how long after opening, and the server's memory.
//! - `flood --count N`: N producer handshakes at once, more than the server's `--max-connections`. Reports how
//!   many were accepted and refused (`TOO_MANY_CONNECTIONS`) or failed otherwise, the server's memory before,
//!   at the peak and after, and whether a producer connected beforehand still gets a Submit through.
//!
//! Both run in one process (at most ~15,000 connections: the file-descriptor limit), from loopback source
//! addresses 127.0.0.N, 10,000 connections per address.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pm_protocol::pb::{self, Hello};
use pm_protocol::{Envelope, ErrorCode, FrameCodec, Kind, Role, PROTOCOL_VERSION};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_util::codec::{Decoder, Encoder};

use crate::backend::{LoadError, Pm};
use crate::idle::{connect, rss};
use crate::stats::Quantiles;
use crate::workload::{self, Outcome, Workload};

/// Connections per loopback source address.
const PER_SOURCE: usize = 10_000;
/// Connection attempts in flight.
const CONCURRENT_OPENS: usize = 512;

/// What a slow connection sends before it stalls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SlowMode {
    /// Nothing at all.
    Silent,
    /// Two of the four bytes of a length prefix.
    Partial,
}

/// Options of `slowloris`.
#[derive(Debug, Clone)]
pub struct SlowOptions {
    /// Slow connections.
    pub count: usize,
    /// What they send.
    pub mode: SlowMode,
    /// Longest wait for the server to close them after the workload, and for each to open.
    pub hold: Duration,
    /// Last byte of the first source address.
    pub first_source: u8,
    /// The server's pid (its memory).
    pub server_pid: Option<u32>,
}

/// A workload run, summed up.
#[derive(Debug, Serialize)]
pub struct RunSummary {
    /// Acked tasks/s in the window.
    pub acked_per_s: f64,
    /// End-to-end latency.
    pub latency_ms: Quantiles,
    /// Submit and ack errors.
    pub errors: u64,
}

impl RunSummary {
    fn of(o: &Outcome, window: Duration) -> RunSummary {
        RunSummary {
            acked_per_s: o.n.acked_win as f64 / window.as_secs_f64(),
            latency_ms: Quantiles::of(&o.latency),
            errors: o.n.submit_errors + o.n.ack_errors,
        }
    }
}

/// What `slowloris` measured.
#[derive(Debug, Serialize)]
pub struct SlowReport {
    /// What the slow connections sent.
    pub mode: SlowMode,
    /// Slow connections asked for.
    pub requested: usize,
    /// Slow connections opened (TCP connected).
    pub opened: usize,
    /// Closed by the server (end of stream or reset) before the end.
    pub closed_by_server: usize,
    /// Still open at the end (the server never closed them).
    pub still_open: usize,
    /// Could not be opened.
    pub failed_to_open: usize,
    /// Time from the connect to the server's close.
    pub closed_after_ms: Quantiles,
    /// The workload alone.
    pub baseline: RunSummary,
    /// The workload while the slow connections were opened and held.
    pub under_attack: RunSummary,
    /// Server RSS before the slow connections, bytes.
    pub server_rss_before: Option<u64>,
    /// Highest server RSS sampled while they were open.
    pub server_rss_peak: Option<u64>,
    /// Server RSS at the end.
    pub server_rss_after: Option<u64>,
}

fn source(first: u8, i: usize) -> IpAddr {
    let last = (usize::from(first) + i / PER_SOURCE).min(254) as u8;
    IpAddr::from([127, 0, 0, last])
}

/// Samples the server's RSS every 200 ms into `peak` until `stop`.
fn sample_peak(pid: Option<u32>, peak: Arc<AtomicU64>, stop: Arc<std::sync::atomic::AtomicBool>) {
    let Some(pid) = pid else { return };
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Ok(r) = rss(pid) {
                peak.fetch_max(r, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
}

/// One slow connection: opens, sends its bytes, and waits for the server to close it. `Some(elapsed)` when
/// the server closed it within `hold`; `None` when it stayed open; `Err` when it could not open.
async fn slow_connection(
    addr: &str,
    src: IpAddr,
    mode: SlowMode,
    hold: Duration,
    opened: &AtomicUsize,
    limit: &Semaphore,
) -> Result<Option<Duration>, LoadError> {
    // The permit bounds the connects in flight, not the connections held.
    let permit = limit.acquire().await.map_err(|e| LoadError::Backend(e.to_string()))?;
    // From before the connect: the server's clock starts at its accept, which a busy client may notice late.
    let start = Instant::now();
    let mut s = tokio::time::timeout(hold, connect(addr, Some(SocketAddr::new(src, 0))))
        .await
        .map_err(|_| LoadError::Backend("connect timed out".into()))??;
    drop(permit);
    opened.fetch_add(1, Ordering::Relaxed);
    if mode == SlowMode::Partial && s.write_all(&[0, 0]).await.is_err() {
        // Closed before we could even stall: the server closed it.
        return Ok(Some(start.elapsed()));
    }
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(hold, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    Ok(closed.ok().map(|()| start.elapsed()))
}

/// `slowloris`: a baseline workload run, then the same run while `count` slow connections are opened.
pub async fn slowloris(pm: Pm, w: Workload, opts: SlowOptions) -> Result<SlowReport, LoadError> {
    let baseline = workload::run(Arc::new(pm.clone()), w.clone(), None).await?;
    let before = opts.server_pid.map(rss).transpose()?;
    let (peak, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(std::sync::atomic::AtomicBool::new(false)));
    sample_peak(opts.server_pid, peak.clone(), stop.clone());
    let opened = Arc::new(AtomicUsize::new(0));
    let limit = Arc::new(Semaphore::new(CONCURRENT_OPENS));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..opts.count {
        let (addr, opened, limit, o) = (pm.addr.clone(), opened.clone(), limit.clone(), opts.clone());
        tasks.spawn(
            async move { slow_connection(&addr, source(o.first_source, i), o.mode, o.hold, &opened, &limit).await },
        );
    }
    let attacked = workload::run(Arc::new(pm), w.clone(), None).await?;
    let (mut closed, mut open_failed) = (Vec::new(), 0usize);
    let mut still_open = 0;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(Some(d))) => closed.push(d),
            Ok(Ok(None)) => still_open += 1,
            Ok(Err(_)) | Err(_) => open_failed += 1,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let after = opts.server_pid.map(rss).transpose()?;
    let mut h = crate::stats::histogram();
    for d in &closed {
        let _ = h.record((d.as_micros() as u64).max(1));
    }
    Ok(SlowReport {
        mode: opts.mode,
        requested: opts.count,
        opened: opened.load(Ordering::Relaxed),
        closed_by_server: closed.len(),
        still_open,
        failed_to_open: open_failed,
        closed_after_ms: Quantiles::of(&h),
        baseline: RunSummary::of(&baseline, w.duration),
        under_attack: RunSummary::of(&attacked, w.duration),
        server_rss_before: before,
        server_rss_peak: opts.server_pid.map(|_| peak.load(Ordering::Relaxed)),
        server_rss_after: after,
    })
}

/// What `flood` measured.
#[derive(Debug, Serialize)]
pub struct FloodReport {
    /// Handshakes tried.
    pub requested: usize,
    /// Answered with Welcome.
    pub accepted: usize,
    /// Refused with TOO_MANY_CONNECTIONS.
    pub refused: usize,
    /// Failed otherwise (connect errors, resets, other codes).
    pub failed: usize,
    /// Seconds for every attempt to end.
    pub flood_s: f64,
    /// A producer connected before the flood got a Submit through after it.
    pub submit_after_flood_ok: bool,
    /// That Submit's round trip, ms.
    pub submit_after_flood_ms: f64,
    /// Server RSS before, bytes.
    pub server_rss_before: Option<u64>,
    /// Highest server RSS sampled during the flood.
    pub server_rss_peak: Option<u64>,
    /// Server RSS after every flood connection closed (and 2 s), bytes.
    pub server_rss_after: Option<u64>,
}

/// How one flood handshake ended.
enum Handshake {
    Welcome(tokio::net::TcpStream),
    Refused,
    Failed,
}

async fn handshake(addr: &str, src: IpAddr, token: &str, i: usize) -> Handshake {
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(30), connect(addr, Some(SocketAddr::new(src, 0)))).await
    else {
        return Handshake::Failed;
    };
    let mut codec = FrameCodec::new(1 << 20);
    let mut buf = BytesMut::new();
    let hello = Hello {
        version: PROTOCOL_VERSION,
        role: Role::Producer as i32,
        client_id: format!("pm-loadtest-flood-{i}"),
        auth_token: token.to_string(),
        ..Default::default()
    };
    if codec.encode(Envelope::from(hello), &mut buf).is_err() || s.write_all(&buf).await.is_err() {
        return Handshake::Failed;
    }
    buf.clear();
    let answer = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match s.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            match codec.decode(&mut buf) {
                Ok(Some(env)) => return Some(env),
                Ok(None) => {}
                Err(_) => return None,
            }
        }
    })
    .await;
    match answer {
        Ok(Some(Envelope { kind: Some(Kind::Welcome(_)) })) => Handshake::Welcome(s),
        Ok(Some(Envelope { kind: Some(Kind::Error(pb::Error { code, .. })) }))
            if code == ErrorCode::TooManyConnections as i32 =>
        {
            Handshake::Refused
        }
        _ => Handshake::Failed,
    }
}

/// `flood`: `count` producer handshakes at once; the accepted ones are held until every attempt ended.
pub async fn flood(pm: Pm, count: usize, first_source: u8, server_pid: Option<u32>) -> Result<FloodReport, LoadError> {
    let opts = pm_client::ConnectOptions::producer().token(pm.token.clone()).reconnect(false);
    let producer = pm_client::Client::connect(&pm.addr, opts)
        .await
        .map_err(|e| LoadError::Connect { addr: pm.addr.clone(), message: e.to_string() })?;
    let before = server_pid.map(rss).transpose()?;
    let (peak, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(std::sync::atomic::AtomicBool::new(false)));
    sample_peak(server_pid, peak.clone(), stop.clone());
    let start = Instant::now();
    let limit = Arc::new(Semaphore::new(CONCURRENT_OPENS));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let (addr, token, limit) = (pm.addr.clone(), pm.token.clone(), limit.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.ok();
            handshake(&addr, source(first_source, i), &token, i).await
        });
    }
    let (mut held, mut refused, mut failed) = (Vec::new(), 0, 0);
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Handshake::Welcome(s)) => held.push(s),
            Ok(Handshake::Refused) => refused += 1,
            Ok(Handshake::Failed) | Err(_) => failed += 1,
        }
    }
    let flood_s = start.elapsed().as_secs_f64();
    let accepted = held.len();
    drop(held);
    let t = Instant::now();
    let task =
        pm_protocol::pb::TaskSpec { payload: vec![0u8; 16].into(), queue: pm.queue.clone(), ..Default::default() };
    let submit_after_flood_ok = producer.submit_one(task).await.is_ok();
    let submit_after_flood_ms = t.elapsed().as_secs_f64() * 1000.0;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let after = server_pid.map(rss).transpose()?;
    Ok(FloodReport {
        requested: count,
        accepted,
        refused,
        failed,
        flood_s,
        submit_after_flood_ok,
        submit_after_flood_ms,
        server_rss_before: before,
        server_rss_peak: server_pid.map(|_| peak.load(Ordering::Relaxed)),
        server_rss_after: after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_change_every_ten_thousand_connections() {
        assert_eq!(source(2, 0), IpAddr::from([127, 0, 0, 2]));
        assert_eq!(source(2, PER_SOURCE - 1), IpAddr::from([127, 0, 0, 2]));
        assert_eq!(source(2, PER_SOURCE), IpAddr::from([127, 0, 0, 3]));
        assert_eq!(source(250, 100 * PER_SOURCE), IpAddr::from([127, 0, 0, 254]));
    }
}
