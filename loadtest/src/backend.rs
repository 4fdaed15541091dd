//! What a scenario drives: a task queue with producers that submit batches and consumers that receive and
//! acknowledge them. One implementation per system, so the same workload runs against pm-scheduler
//! ([`Pm`]), Redis streams ([`crate::redis`]) and beanstalkd ([`crate::beanstalk`]) and the numbers compare.
//!
//! Every payload starts with its send time (u64 little endian, ns since the run's start); the rest is padding.
//! A backend only moves payloads, it never looks inside.

use std::future::Future;

use bytes::Bytes;
use pm_client::{Client, ConnectOptions, Leases};
use pm_protocol::pb::TaskSpec;
use pm_protocol::ErrorCode;

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Could not connect or handshake.
    #[error("connect to {addr}: {message}")]
    Connect {
        /// The address tried.
        addr: String,
        /// What went wrong.
        message: String,
    },
    /// The server answered with an error, or the connection broke mid-request.
    #[error("{0}")]
    Backend(String),
    /// A socket error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// One delivered task: its payload and what the backend needs to acknowledge it.
#[derive(Debug)]
pub struct Delivery<T> {
    /// The payload as submitted.
    pub payload: Bytes,
    /// Backend-specific acknowledgement handle (lease id, stream entry id, job id).
    pub token: T,
    /// Whether the backend says this is a redelivery.
    pub redelivered: bool,
}

/// A system under test.
pub trait Backend: Send + Sync + 'static {
    /// A producer connection.
    type Producer: Producer;
    /// A consumer connection.
    type Consumer: Consumer;
    /// Opens producer number `i`.
    fn producer(&self, i: usize) -> impl Future<Output = Result<Self::Producer, LoadError>> + Send;
    /// Opens consumer number `i`, ready to receive up to `prefetch` tasks before acknowledging.
    fn consumer(&self, i: usize, prefetch: u32) -> impl Future<Output = Result<Self::Consumer, LoadError>> + Send;
}

/// Submits batches; clones share the connection (requests are pipelined when the backend allows it).
pub trait Producer: Clone + Send + Sync + 'static {
    /// Submits `payloads` as one batch and returns how many were accepted. Returns only once the server
    /// answered, so with a durable backend the accepted ones are on disk.
    fn submit(&self, payloads: Vec<Bytes>) -> impl Future<Output = Result<usize, LoadError>> + Send;
}

/// Receives deliveries.
pub trait Consumer: Send + 'static {
    /// Acknowledgement handle of one delivery.
    type Token: Send + 'static;
    /// Acknowledges deliveries, possibly while the consumer keeps receiving.
    type Acker: Acker<Token = Self::Token>;
    /// Waits for at least one delivery and returns up to `max` of them; `Ok(None)` when the stream ended.
    fn next(
        &mut self,
        max: usize,
    ) -> impl Future<Output = Result<Option<Vec<Delivery<Self::Token>>>, LoadError>> + Send;
    /// A handle that acknowledges this consumer's deliveries.
    fn acker(&self) -> Self::Acker;
}

/// Acknowledges deliveries (and, where the backend has credits, grants as many back).
pub trait Acker: Clone + Send + Sync + 'static {
    /// Acknowledgement handle of one delivery.
    type Token: Send + 'static;
    /// Acknowledges `tokens`; returns, per token in order, whether the server accepted it.
    fn ack(&self, tokens: Vec<Self::Token>) -> impl Future<Output = Result<Vec<bool>, LoadError>> + Send;
}

/// pm-scheduler over its own protocol (`pm_client`).
#[derive(Debug, Clone)]
pub struct Pm {
    /// `HOST:PORT` of the scheduler; for a cluster, its members comma-separated: producer and consumer `i`
    /// use member `i mod N` (tasks carry no key, so any member takes them).
    pub addr: String,
    /// Queue the tasks go to.
    pub queue: String,
    /// Token presented in Hello (empty: none).
    pub token: String,
}

fn pm_err(addr: &str) -> impl Fn(pm_client::Error) -> LoadError + '_ {
    move |e| LoadError::Connect { addr: addr.to_string(), message: e.to_string() }
}

impl Pm {
    /// The member connection `i` goes to.
    fn member(&self, i: usize) -> &str {
        let members: Vec<&str> = self.addr.split(',').map(str::trim).filter(|a| !a.is_empty()).collect();
        members.get(i % members.len().max(1)).copied().unwrap_or(&self.addr)
    }
}

impl Backend for Pm {
    type Producer = PmProducer;
    type Consumer = PmConsumer;

    async fn producer(&self, i: usize) -> Result<PmProducer, LoadError> {
        let opts = ConnectOptions::producer().client_id(format!("pm-loadtest-producer-{i}")).token(self.token.clone());
        let addr = self.member(i);
        let client = Client::connect(addr, opts).await.map_err(pm_err(addr))?;
        Ok(PmProducer { client, queue: self.queue.clone() })
    }

    async fn consumer(&self, i: usize, prefetch: u32) -> Result<PmConsumer, LoadError> {
        let opts = ConnectOptions::agent().client_id(format!("pm-loadtest-agent-{i}")).token(self.token.clone());
        let addr = self.member(i);
        let (client, leases) = Client::connect_agent(addr, opts).await.map_err(pm_err(addr))?;
        client.credit(&self.queue, prefetch).await.map_err(pm_err(addr))?;
        Ok(PmConsumer { client, leases, queue: self.queue.clone() })
    }
}

/// A pm producer connection.
#[derive(Debug, Clone)]
pub struct PmProducer {
    client: Client,
    queue: String,
}

impl Producer for PmProducer {
    async fn submit(&self, payloads: Vec<Bytes>) -> Result<usize, LoadError> {
        let tasks =
            payloads.into_iter().map(|payload| TaskSpec { payload, queue: self.queue.clone(), ..Default::default() });
        let results = self.client.submit(tasks.collect()).await.map_err(|e| LoadError::Backend(e.to_string()))?;
        Ok(results.iter().filter(|r| r.code == ErrorCode::Ok as i32).count())
    }
}

/// A pm agent connection: credits in, leased tasks out.
#[derive(Debug)]
pub struct PmConsumer {
    client: Client,
    leases: Leases,
    queue: String,
}

impl Consumer for PmConsumer {
    type Token = u64;
    type Acker = PmAcker;

    async fn next(&mut self, max: usize) -> Result<Option<Vec<Delivery<u64>>>, LoadError> {
        let mut out = Vec::new();
        // Revocations and reclaims do not happen in a load test; skip them.
        while out.is_empty() {
            let Some(ev) = self.leases.next().await else { return Ok(None) };
            out.extend(ev.into_leased());
        }
        while let Some(ev) = (out.len() < max).then(|| self.leases.try_next()).flatten() {
            out.extend(ev.into_leased());
        }
        let deliveries = out
            .into_iter()
            .map(|t| Delivery { redelivered: t.attempt > 1, token: t.lease_id, payload: t.payload })
            .collect();
        Ok(Some(deliveries))
    }

    fn acker(&self) -> PmAcker {
        PmAcker { client: self.client.clone(), queue: self.queue.clone() }
    }
}

/// Acks leases and grants the same number of credits back.
#[derive(Debug, Clone)]
pub struct PmAcker {
    client: Client,
    queue: String,
}

impl Acker for PmAcker {
    type Token = u64;

    async fn ack(&self, tokens: Vec<u64>) -> Result<Vec<bool>, LoadError> {
        let n = tokens.len() as u32;
        let items = tokens.into_iter().map(|id| (id, Bytes::new())).collect();
        let codes = self.client.ack(items).await.map_err(|e| LoadError::Backend(e.to_string()))?;
        self.client.credit(&self.queue, n).await.map_err(|e| LoadError::Backend(e.to_string()))?;
        Ok(codes.into_iter().map(|c| c == ErrorCode::Ok).collect())
    }
}

/// The check every backend passes against its real server (the tests of `redis.rs` and `beanstalk.rs`).
#[cfg(test)]
pub(crate) mod conformance {
    use std::collections::HashSet;
    use std::time::Duration;

    use bytes::Bytes;

    use super::{Acker, Backend, Consumer, Producer};

    /// A binary payload, unique per (batch, index); CR LF and non-UTF-8 bytes check binary safety.
    pub(crate) fn payload(batch: usize, i: usize) -> Bytes {
        let mut p = format!("b{batch}-i{i}").into_bytes();
        p.extend_from_slice(&[0, 0xff, b'\r', b'\n', 0x80]);
        Bytes::from(p)
    }

    /// Submits 3 batches of 64 from two clones of one producer at once, then receives them all in batches of
    /// at most 50 with acks running concurrently with the next receives (as in the load generator): every
    /// payload arrives exactly once, not marked as a redelivery, and every ack is accepted. Returns the
    /// acker for the backend's own checks afterwards.
    pub(crate) async fn round_trip<B: Backend>(backend: &B, prefetch: u32) -> <B::Consumer as Consumer>::Acker {
        let producer = backend.producer(0).await.expect("producer");
        let clones = [producer.clone(), producer];
        let mut submits = Vec::new();
        for batch in 0..3 {
            let p = clones[batch % 2].clone();
            let payloads = (0..64).map(|i| payload(batch, i)).collect();
            submits.push(tokio::spawn(async move { p.submit(payloads).await }));
        }
        for s in submits {
            assert_eq!(s.await.expect("join").expect("submit"), 64);
        }
        let mut consumer = backend.consumer(0, prefetch).await.expect("consumer");
        let acker = consumer.acker();
        let (mut seen, mut acks) = (HashSet::new(), Vec::new());
        while seen.len() < 3 * 64 {
            let batch = tokio::time::timeout(Duration::from_secs(10), consumer.next(50))
                .await
                .expect("deliveries within 10 s")
                .expect("next")
                .expect("the stream does not end");
            assert!(!batch.is_empty() && batch.len() <= 50, "batch of {}", batch.len());
            let mut tokens = Vec::new();
            for d in batch {
                assert!(!d.redelivered);
                assert!(seen.insert(d.payload.clone()), "payload delivered twice: {:?}", d.payload);
                tokens.push(d.token);
            }
            let acker = acker.clone();
            acks.push(tokio::spawn(async move {
                let n = tokens.len();
                (acker.ack(tokens).await.expect("ack"), n)
            }));
        }
        for a in acks {
            let (oks, n) = a.await.expect("join");
            assert_eq!(oks, vec![true; n]);
        }
        let expected: HashSet<Bytes> = (0..3).flat_map(|b| (0..64).map(move |i| payload(b, i))).collect();
        assert_eq!(seen, expected);
        acker
    }
}
