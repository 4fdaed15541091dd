//! Copying applications between the members of a cluster. Every member needs every pipeline definition,
//! since a template submit is filled in by the node that owns its key.
//!
//! No consensus: each application is a record with a version (the time of its last change, kept growing),
//! and a member keeps the greater of two records (the higher version, then a deletion, then the larger
//! document), so members that have seen the same records hold the same catalog whatever order they saw
//! them in. Two ways bring them together:
//! - **push**: a member that changes an application sends the record to every peer before it answers, and
//!   names in its answer the peers it could not reach;
//! - **pull**: at start, before it serves (so a restarted member never answers "no application" for one
//!   created while it was down), and then every `--catalog-sync-interval`, a member asks each peer for all its
//!   records and keeps the newer ones, so a member that was down or cut off catches up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pm_client::{Client, ConnectOptions};
use pm_protocol::pb;
use pm_task::ring::Ring;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;

/// Time a peer has to answer a push or a pull.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// The other members, as seen by the catalog.
pub struct CatalogPeers {
    peers: Vec<(usize, String)>,
    opts: ConnectOptions,
    clients: parking_lot::Mutex<HashMap<usize, Client>>,
}

impl CatalogPeers {
    /// The peers of member `me` of `ring`, reached as `ROLE_PEER` with `token` (and `tls`).
    pub fn new(ring: &Ring, me: usize, token: String, tls: Option<Arc<rustls::ClientConfig>>) -> CatalogPeers {
        let peers = ring.members().iter().enumerate().filter(|(i, _)| *i != me).map(|(i, a)| (i, a.clone())).collect();
        let name = ring.members().get(me).cloned().unwrap_or_default();
        let mut opts = ConnectOptions::peer()
            .client_id(format!("catalog:{name}"))
            .token(token)
            .reconnect(false)
            .connect_timeout(PEER_TIMEOUT)
            .request_timeout(PEER_TIMEOUT);
        if let Some(tls) = tls {
            opts = opts.tls(tls);
        }
        CatalogPeers { peers, opts, clients: parking_lot::Mutex::new(HashMap::new()) }
    }

    async fn client(&self, ordinal: usize, addr: &str) -> Result<Client, pm_client::Error> {
        if let Some(c) = self.clients.lock().get(&ordinal).cloned() {
            return Ok(c);
        }
        let c = Client::connect(addr, self.opts.clone()).await?;
        self.clients.lock().insert(ordinal, c.clone());
        Ok(c)
    }

    /// Sends `records` to every peer at once; returns the peers that did not take them, with why.
    pub async fn push(&self, records: Vec<pb::AppRecord>) -> Vec<String> {
        let sends = self.peers.iter().map(|(ordinal, addr)| {
            let records = records.clone();
            async move {
                let result = match self.client(*ordinal, addr).await {
                    Ok(c) => c.app_sync(records).await,
                    Err(e) => Err(e),
                };
                result.map_err(|e| {
                    self.clients.lock().remove(ordinal);
                    format!("{addr} ({})", e.message())
                })
            }
        });
        futures::future::join_all(sends).await.into_iter().filter_map(Result::err).collect()
    }

    /// Pulls every peer's records into `catalog` every `interval` (never for 0), until `stop`. The pull at
    /// start is [`CatalogPeers::pull_all`], which the node awaits before it serves (see `Node::catch_up`).
    pub async fn run(self: Arc<Self>, catalog: Arc<Catalog>, interval: Duration, stop: CancellationToken) {
        if interval.is_zero() {
            return;
        }
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = stop.cancelled() => return,
            }
            self.pull_all(&catalog).await;
        }
    }

    /// Asks every peer at once for its records and keeps the newer ones (a peer lists its records without
    /// documents, since a catalog may exceed one frame, and only the applications newer there are fetched, one
    /// by one). Returns how many peers answered; the others are logged at debug level.
    pub async fn pull_all(&self, catalog: &Catalog) -> usize {
        catalog.prune_deletions().await;
        let pulls = self.peers.iter().map(|(ordinal, addr)| async move {
            let result = self.pull(*ordinal, addr, catalog).await;
            if let Err(e) = &result {
                self.clients.lock().remove(ordinal);
                tracing::debug!(peer = %addr, "applications not pulled: {e}");
            }
            result.is_ok()
        });
        futures::future::join_all(pulls).await.into_iter().filter(|ok| *ok).count()
    }

    /// How many peers there are.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether there is no peer (never, for a cluster of two or more).
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    async fn pull(&self, ordinal: usize, addr: &str, catalog: &Catalog) -> Result<(), pm_client::Error> {
        let client = self.client(ordinal, addr).await?;
        for listed in client.app_records().await? {
            if catalog.version_of(&listed.name).is_some_and(|v| v >= listed.version) {
                continue;
            }
            let rec = if listed.deleted {
                listed
            } else {
                match client.get_app(&listed.name).await {
                    Ok(info) => pb::AppRecord {
                        name: info.name,
                        version: info.version,
                        deleted: false,
                        document: info.document,
                    },
                    // Deleted there since it listed it: the next round sees the deletion.
                    Err(e) if e.code() == Some(pm_protocol::ErrorCode::NotFound) => continue,
                    Err(e) => return Err(e),
                }
            };
            let (name, version) = (rec.name.clone(), rec.version);
            match catalog.merge(rec).await {
                Ok(true) => tracing::info!(peer = %addr, app = %name, version, "application copied from a peer"),
                Ok(false) => {}
                Err(e) => tracing::warn!(peer = %addr, app = %name, "application of a peer not copied: {e}"),
            }
        }
        Ok(())
    }
}
