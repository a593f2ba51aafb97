//! One connection type for a single Redis node and for a Redis Cluster.
//!
//! A single node uses a [`ConnectionManager`] (multiplexed, reconnecting);
//! a cluster a [`ClusterConnection`] (multiplexed per node, following slot
//! moves and failovers). The cluster one is connected on first use, so a
//! cold start succeeds while Redis is away, as with the manager.
//!
//! What the cluster refuses and this code therefore never does: a script or
//! a pipeline whose keys live in more than one slot (every conversation key,
//! its job shard's stream and owed index share one hash tag, see
//! [`super::keys`]), and a plain `SCAN` (it reaches one node only: use
//! [`RedisConnection::scan_keys`]). `MGET`/`DEL` over many slots are split
//! by the client. `INFO` answers once per primary ([`RedisConnection::info`]).
//!
//! TLS (`rediss://`, ElastiCache in-transit encryption) goes through rustls:
//! the server's certificate must chain to the configured CA bundle
//! (`REDIS_CA_FILE`) or, without one, to the Mozilla roots — which hold
//! Amazon's, so ElastiCache needs no bundle. A cluster client passes the same
//! settings (and the first node's `user:password`) to every node it finds.

use std::{sync::Arc, time::Duration};

use redis::{
    AsyncCommands, Cmd, Pipeline, RedisFuture, RedisResult, TlsCertificates, Value,
    aio::{ConnectionLike, ConnectionManager},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    cluster_routing::{RoutingInfo, SingleNodeRoutingInfo},
};
use tokio::sync::OnceCell;

#[derive(Clone)]
pub enum RedisConnection {
    Single(ConnectionManager),
    Cluster(LazyCluster),
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "RedisConnection::Single",
            Self::Cluster(_) => "RedisConnection::Cluster",
        })
    }
}

/// A cluster connection opened on first use and shared by every clone.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // the client holds credentials
pub struct LazyCluster {
    client: Arc<ClusterClient>,
    cell: Arc<OnceCell<ClusterConnection>>,
}

impl LazyCluster {
    async fn get(&self) -> RedisResult<ClusterConnection> {
        self.cell.get_or_try_init(|| self.client.get_async_connection()).await.cloned()
    }
}

/// Timeouts of one connection: the shared one answers fast or fails; the
/// consumer's reader waits out its blocking reads.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub response: Duration,
}

impl RedisConnection {
    /// Builds the connection for `url` (a comma-separated node list, or one
    /// node with `cluster` set, means a cluster), trusting `ca` (a PEM
    /// bundle) for `rediss://`. Connects lazily.
    pub fn open(url: &str, cluster: bool, ca: Option<&[u8]>, timeouts: Timeouts) -> RedisResult<Self> {
        crate::tls::install_default_provider();
        // Only for `rediss://`: handing certificates to a plaintext URL
        // would switch the cluster client to TLS behind the URL's back.
        let certs = ca
            .filter(|_| url.trim_start().starts_with("rediss://"))
            .map(|pem| TlsCertificates { client_tls: None, root_cert: Some(pem.to_vec()) });
        if cluster {
            let nodes: Vec<&str> = url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
            let mut builder = ClusterClient::builder(nodes)
                .connection_timeout(timeouts.connect)
                .response_timeout(timeouts.response)
                .retries(2);
            if let Some(certs) = certs {
                builder = builder.certs(certs);
            }
            return Ok(Self::Cluster(LazyCluster { client: Arc::new(builder.build()?), cell: Arc::default() }));
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeouts.connect))
            .set_response_timeout(Some(timeouts.response))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let client = match certs {
            Some(certs) => redis::Client::build_with_tls(url, certs)?,
            None => redis::Client::open(url)?,
        };
        Ok(Self::Single(client.get_connection_manager_lazy(config)?))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// `INFO <section>` of every primary (one on a single node).
    pub async fn info(&mut self, section: &str) -> RedisResult<Vec<String>> {
        let value: Value = redis::cmd("INFO").arg(section).query_async(self).await?;
        Ok(match value {
            Value::Map(nodes) => nodes.into_iter().filter_map(|(_, v)| redis::from_redis_value(v).ok()).collect(),
            other => vec![redis::from_redis_value(other)?],
        })
    }

    /// Every key matching `pattern`, from every primary of a cluster.
    pub async fn scan_keys(&mut self, pattern: &str) -> RedisResult<Vec<String>> {
        match self {
            Self::Single(conn) => {
                let mut keys = Vec::new();
                let mut iter: redis::AsyncIter<String> = conn.scan_match(pattern).await?;
                while let Some(key) = futures::StreamExt::next(&mut iter).await {
                    keys.push(key?);
                }
                Ok(keys)
            }
            Self::Cluster(lazy) => {
                let mut conn = lazy.get().await?;
                let mut keys = Vec::new();
                for (host, port) in primaries(&mut conn).await? {
                    let mut cursor: u64 = 0;
                    loop {
                        let mut scan = redis::cmd("SCAN");
                        scan.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1_000);
                        let route =
                            RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host: host.clone(), port });
                        let (next, batch): (u64, Vec<String>) =
                            redis::from_redis_value(conn.route_command(scan, route).await?)?;
                        keys.extend(batch);
                        if next == 0 {
                            break;
                        }
                        cursor = next;
                    }
                }
                Ok(keys)
            }
        }
    }
}

/// The cluster's primaries (host, port), from `CLUSTER NODES`.
async fn primaries(conn: &mut ClusterConnection) -> RedisResult<Vec<(String, u16)>> {
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(conn).await?;
    Ok(nodes
        .lines()
        .filter(|line| line.split(' ').nth(2).is_some_and(|flags| flags.contains("master") && !flags.contains("fail")))
        .filter_map(|line| {
            // "<id> <host:port@cport[,hostname]> <flags> …"
            let address = line.split(' ').nth(1)?.split('@').next()?;
            let (host, port) = address.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect())
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(lazy) => Box::pin(async move { lazy.get().await?.req_packed_command(cmd).await }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(lazy) => {
                Box::pin(async move { lazy.get().await?.req_packed_commands(pipeline, offset, count).await })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(_) => 0,
        }
    }
}
