//! [`RedisRegistry`]: the [`Registry`] kept in one Redis primary, shared by every node.
//!
//! # Schema (every key starts with the configured prefix, `zenlive:` by default)
//! - `node:{id}` = the node's incarnation, `PX` = node TTL; `nodeinfo:{id}` = its
//!   [`NodeInfo`] as JSON with the same TTL; the set `nodes` lists ids that may be alive
//!   (pruned when their info has expired).
//! - `owner:{kind}:{name}` = `{node}|{epoch}`, `PX` = lease TTL: the lease. A lease whose
//!   node's registration is gone counts as free (the node died), so names move within the
//!   node TTL rather than the lease TTL.
//! - `epoch`: one `INCR` counter for every name, the fencing token; it only grows, so a
//!   lease claimed after another expired always carries a greater epoch, and nothing is
//!   left behind per name (unique per-broadcast names would otherwise leave a key each,
//!   forever). A per-name `epoch:{kind}:{name}` counter of an older version is folded into
//!   it (never going backwards) and deleted the next time its name is claimed.
//!
//! - `kept:{kind}`: the set of names of that kind kept alive ([`Registry::keep`]), without
//!   TTL.
//! - The channel `claims` carries each name claimed (`kind:name`), published by the claim
//!   script: hints for whoever waits for a name to get an owner (a relay whose origin went
//!   away), so it looks up at once rather than on a timer. A node subscribes when it
//!   connects, with a connection of its own, and resubscribes when that breaks; hints are
//!   best effort.
//!
//! Claim, renew, release and heartbeat are Lua scripts, so each check-then-write is atomic
//! in Redis: a node that lost its lease can never extend or delete a newer owner's.
//!
//! # Failure
//! Every call is bounded by [`RedisRegistry::OP_TIMEOUT`]; when Redis is down, calls fail
//! fast with [`RegistryError::Unavailable`] and the connection manager reconnects in the
//! background, so nothing needs restarting when Redis comes back.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use tokio::sync::broadcast;
use tokio_stream::StreamExt;

use crate::id::{ActorKey, ActorKind, NodeId};
use crate::registry::{
    BoxFuture, ClaimHints, Lease, NodeInfo, Owner, Registry, RegistryError, CLAIM_HINTS_CAPACITY,
};

/// Longest pause between attempts to (re)subscribe to the claim hints.
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(5);

/// `KEYS`: node, owner, the epoch counter, the name's legacy epoch counter. `ARGV`: node
/// id, TTL in ms, the node-key prefix, the hint channel, the name as `kind:name`.
/// Returns `{1, epoch}` on success, `{0, owner}` when owned, `{-1}` when the node is dead.
/// A lease whose owner node is no longer registered counts as free: a crashed node's
/// streams can be taken over once its registration expires, before their leases would.
const CLAIM: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local owner = redis.call('GET', KEYS[2])
if owner then
  local sep = string.find(owner, '|[^|]*$')
  if sep == nil or redis.call('EXISTS', ARGV[3] .. string.sub(owner, 1, sep - 1)) == 1 then
    return {0, owner}
  end
end
local epoch = redis.call('INCR', KEYS[3])
local legacy = tonumber(redis.call('GET', KEYS[4]) or '')
if legacy then
  if legacy >= epoch then
    epoch = legacy + 1
    redis.call('SET', KEYS[3], epoch)
  end
  redis.call('DEL', KEYS[4])
end
redis.call('SET', KEYS[2], ARGV[1] .. '|' .. epoch, 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return {1, epoch}
";

/// `KEYS`: owner. `ARGV`: expected value, TTL in ms. 1 if renewed.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// `KEYS`: owner. `ARGV`: expected value. 1 if deleted.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// `KEYS`: node, nodeinfo. `ARGV`: incarnation, info JSON, TTL in ms. 1 if extended.
const HEARTBEAT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// `KEYS`: node, nodeinfo. `ARGV`: incarnation. Deletes both if the incarnation matches.
const DEREGISTER: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
";

/// The registry in Redis. Cheap to clone: clones share one multiplexed connection.
#[derive(Clone)]
pub struct RedisRegistry {
    connection: ConnectionManager,
    prefix: String,
    hints: Arc<Hints>,
    claim: Script,
    renew: Script,
    release: Script,
    heartbeat: Script,
    deregister: Script,
}

impl std::fmt::Debug for RedisRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRegistry").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

fn unavailable(error: impl std::fmt::Display) -> RegistryError {
    RegistryError::Unavailable { reason: error.to_string() }
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisRegistry {
    /// How long any one registry call may take before it fails as unavailable.
    pub const OP_TIMEOUT: Duration = Duration::from_secs(2);

    /// Connects to `url` (`redis://host:port/db`, `rediss://` is not built in) with keys
    /// under `prefix`. Fails when Redis cannot be reached now; after that, the connection
    /// is re-established in the background whenever it breaks.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, RegistryError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connect = client.get_connection_manager_with_config(config);
        let connection = tokio::time::timeout(Self::OP_TIMEOUT, connect)
            .await
            .map_err(|_| unavailable(format!("no answer from {url} within 2 s")))?
            .map_err(unavailable)?;
        let sender = broadcast::channel(CLAIM_HINTS_CAPACITY).0;
        let channel = format!("{prefix}claims");
        let subscriber = tokio::spawn(relay_hints(client, channel, sender.clone()));
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
            hints: Arc::new(Hints { sender, subscriber }),
            claim: Script::new(CLAIM),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            heartbeat: Script::new(HEARTBEAT),
            deregister: Script::new(DEREGISTER),
        })
    }

    fn node_key(&self, node: &NodeId) -> String {
        format!("{}node:{node}", self.prefix)
    }

    fn info_key(&self, node: &NodeId) -> String {
        format!("{}nodeinfo:{node}", self.prefix)
    }

    fn nodes_key(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    fn owner_key(&self, key: &ActorKey) -> String {
        format!("{}owner:{}:{}", self.prefix, key.kind, key.name)
    }

    fn epoch_key(&self) -> String {
        format!("{}epoch", self.prefix)
    }

    /// The per-name counter older versions kept (see the module docs).
    fn legacy_epoch_key(&self, key: &ActorKey) -> String {
        format!("{}epoch:{}:{}", self.prefix, key.kind, key.name)
    }

    fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    fn kept_key(&self, kind: &ActorKind) -> String {
        format!("{}kept:{}", self.prefix, kind)
    }

    fn hints_channel(&self) -> String {
        format!("{}claims", self.prefix)
    }
}

/// The claim hints of one registry (shared by its clones): the channel receivers subscribe
/// to, and the task that feeds it from Redis, stopped with the last clone.
struct Hints {
    sender: broadcast::Sender<ActorKey>,
    subscriber: tokio::task::JoinHandle<()>,
}

impl Drop for Hints {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

/// Feeds `sender` with the names published on `channel`, resubscribing (with a growing
/// pause) whenever the subscription cannot be made or breaks.
async fn relay_hints(client: redis::Client, channel: String, sender: broadcast::Sender<ActorKey>) {
    let mut pause = Duration::from_millis(100);
    loop {
        match subscribe(&client, &channel).await {
            Ok(mut messages) => {
                pause = Duration::from_millis(100);
                while let Some(message) = messages.next().await {
                    let name: Option<String> = message.get_payload().ok();
                    if let Some(key) = name.as_deref().and_then(ActorKey::parse) {
                        // Nobody listening is not an error.
                        let _ = sender.send(key);
                    }
                }
                tracing::debug!(%channel, "claim hints: subscription ended; resubscribing");
            }
            Err(error) => {
                tracing::debug!(%channel, %error, "claim hints: cannot subscribe; retrying");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RESUBSCRIBE_MAX);
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> Result<redis::aio::PubSubStream, RegistryError> {
    let mut pubsub = bounded(client.get_async_pubsub()).await?;
    bounded(pubsub.subscribe(channel)).await?;
    Ok(pubsub.into_on_message())
}

/// Runs `op` bounded by [`RedisRegistry::OP_TIMEOUT`], mapping Redis errors.
async fn bounded<T>(
    op: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, RegistryError> {
    match tokio::time::timeout(RedisRegistry::OP_TIMEOUT, op).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(unavailable("redis did not answer within 2 s")),
    }
}

/// Parses an owner value `{node}|{epoch}`.
fn parse_owner(value: &str) -> Result<Owner, RegistryError> {
    let (node, epoch) =
        value.rsplit_once('|').ok_or_else(|| unavailable(format!("bad owner value {value:?}")))?;
    let epoch = epoch.parse().map_err(|_| unavailable(format!("bad owner value {value:?}")))?;
    Ok(Owner { node: NodeId::new(node), epoch })
}

fn owner_value(node: &NodeId, epoch: u64) -> String {
    format!("{node}|{epoch}")
}

fn info_json(info: &NodeInfo) -> Result<String, RegistryError> {
    serde_json::to_string(info).map_err(unavailable)
}

impl Registry for RedisRegistry {
    fn register_node(
        &self,
        info: NodeInfo,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            let json = info_json(&info)?;
            let mut pipe = redis::pipe();
            pipe.atomic()
                .set_options(
                    self.node_key(&info.id),
                    info.incarnation.to_string(),
                    redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(millis(ttl))),
                )
                .ignore()
                .set_options(
                    self.info_key(&info.id),
                    json,
                    redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(millis(ttl))),
                )
                .ignore()
                .sadd(self.nodes_key(), info.id.as_str())
                .ignore();
            let mut connection = self.connection();
            bounded(pipe.query_async::<()>(&mut connection)).await
        })
    }

    fn heartbeat(
        &self,
        node: &NodeId,
        incarnation: u64,
        load: u64,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        let node = node.clone();
        Box::pin(async move {
            let mut connection = self.connection();
            let current: Option<String> = bounded(connection.get(self.info_key(&node))).await?;
            let mut info = match current.as_deref().map(serde_json::from_str::<NodeInfo>) {
                Some(Ok(info)) if info.incarnation == incarnation => info,
                _ => return Err(RegistryError::NodeNotRegistered { node }),
            };
            info.load = load;
            let json = info_json(&info)?;
            let extended: i64 = bounded(
                self.heartbeat
                    .key(self.node_key(&node))
                    .key(self.info_key(&node))
                    .arg(incarnation.to_string())
                    .arg(json)
                    .arg(millis(ttl))
                    .invoke_async(&mut connection),
            )
            .await?;
            if extended == 1 {
                Ok(())
            } else {
                Err(RegistryError::NodeNotRegistered { node })
            }
        })
    }

    fn deregister_node(
        &self,
        node: &NodeId,
        incarnation: u64,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        let node = node.clone();
        Box::pin(async move {
            let mut connection = self.connection();
            let _: i64 = bounded(
                self.deregister
                    .key(self.node_key(&node))
                    .key(self.info_key(&node))
                    .arg(incarnation.to_string())
                    .invoke_async(&mut connection),
            )
            .await?;
            Ok(())
        })
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, RegistryError>> {
        Box::pin(async move {
            let mut connection = self.connection();
            let mut ids: Vec<String> = bounded(connection.smembers(self.nodes_key())).await?;
            ids.sort();
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let keys: Vec<String> =
                ids.iter().map(|id| self.info_key(&NodeId::new(id.clone()))).collect();
            let infos: Vec<Option<String>> = bounded(connection.mget(&keys)).await?;
            let mut nodes = Vec::with_capacity(ids.len());
            let mut gone = Vec::new();
            for (id, info) in ids.into_iter().zip(infos) {
                match info.as_deref().map(serde_json::from_str::<NodeInfo>) {
                    Some(Ok(info)) => nodes.push(info),
                    Some(Err(error)) => tracing::warn!(node = %id, %error, "unreadable node info"),
                    None => gone.push(id),
                }
            }
            if !gone.is_empty() {
                // Best effort: a node that re-registers meanwhile adds itself again.
                let _: Result<i64, _> = bounded(connection.srem(self.nodes_key(), &gone)).await;
            }
            Ok(nodes)
        })
    }

    fn claim(
        &self,
        key: &ActorKey,
        node: &NodeId,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<Lease, RegistryError>> {
        let (key, node) = (key.clone(), node.clone());
        Box::pin(async move {
            let mut connection = self.connection();
            let reply: Vec<redis::Value> = bounded(
                self.claim
                    .key(self.node_key(&node))
                    .key(self.owner_key(&key))
                    .key(self.epoch_key())
                    .key(self.legacy_epoch_key(&key))
                    .arg(node.as_str())
                    .arg(millis(ttl))
                    .arg(format!("{}node:", self.prefix))
                    .arg(self.hints_channel())
                    .arg(key.to_string())
                    .invoke_async(&mut connection),
            )
            .await?;
            let status: i64 = reply
                .first()
                .map(redis::from_redis_value_ref)
                .transpose()
                .map_err(unavailable)?
                .ok_or_else(|| unavailable("empty claim reply"))?;
            let detail = reply.get(1).ok_or_else(|| unavailable("short claim reply"));
            match status {
                1 => {
                    let epoch: u64 = redis::from_redis_value_ref(detail?).map_err(unavailable)?;
                    Ok(Lease { key, node, epoch, ttl })
                }
                0 => {
                    let value: String =
                        redis::from_redis_value_ref(detail?).map_err(unavailable)?;
                    Err(RegistryError::AlreadyOwned { key, owner: parse_owner(&value)? })
                }
                _ => Err(RegistryError::NodeNotRegistered { node }),
            }
        })
    }

    fn renew(&self, lease: &Lease) -> BoxFuture<'_, Result<(), RegistryError>> {
        let lease = lease.clone();
        Box::pin(async move {
            let mut connection = self.connection();
            let renewed: i64 = bounded(
                self.renew
                    .key(self.owner_key(&lease.key))
                    .arg(owner_value(&lease.node, lease.epoch))
                    .arg(millis(lease.ttl))
                    .invoke_async(&mut connection),
            )
            .await?;
            if renewed == 1 {
                Ok(())
            } else {
                Err(RegistryError::LeaseLost { key: lease.key, epoch: lease.epoch })
            }
        })
    }

    fn release(&self, lease: &Lease) -> BoxFuture<'_, Result<(), RegistryError>> {
        let lease = lease.clone();
        Box::pin(async move {
            let mut connection = self.connection();
            let _: i64 = bounded(
                self.release
                    .key(self.owner_key(&lease.key))
                    .arg(owner_value(&lease.node, lease.epoch))
                    .invoke_async(&mut connection),
            )
            .await?;
            Ok(())
        })
    }

    fn lookup(&self, key: &ActorKey) -> BoxFuture<'_, Result<Option<Owner>, RegistryError>> {
        let key = key.clone();
        Box::pin(async move {
            let mut connection = self.connection();
            let value: Option<String> = bounded(connection.get(self.owner_key(&key))).await?;
            value.as_deref().map(parse_owner).transpose()
        })
    }

    fn keep(&self, key: &ActorKey) -> BoxFuture<'_, Result<(), RegistryError>> {
        let (set, name) = (self.kept_key(&key.kind), key.name.clone());
        Box::pin(async move {
            let mut connection = self.connection();
            let _: i64 = bounded(connection.sadd(set, name)).await?;
            Ok(())
        })
    }

    fn unkeep(&self, key: &ActorKey) -> BoxFuture<'_, Result<(), RegistryError>> {
        let (set, name) = (self.kept_key(&key.kind), key.name.clone());
        Box::pin(async move {
            let mut connection = self.connection();
            let _: i64 = bounded(connection.srem(set, name)).await?;
            Ok(())
        })
    }

    fn kept(&self, kind: &ActorKind) -> BoxFuture<'_, Result<Vec<String>, RegistryError>> {
        let set = self.kept_key(kind);
        Box::pin(async move {
            let mut connection = self.connection();
            bounded(connection.smembers(set)).await
        })
    }

    fn claim_hints(&self) -> Option<ClaimHints> {
        Some(self.hints.sender.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_values_round_trip_and_hostile_ones_are_errors() {
        let owner = parse_owner(&owner_value(&NodeId::new("a|b"), 42)).expect("parses");
        assert_eq!(owner, Owner { node: NodeId::new("a|b"), epoch: 42 });
        for bad in ["", "node", "node|", "node|x", "|-1", "n|99999999999999999999999"] {
            assert!(parse_owner(bad).is_err(), "{bad:?}");
        }
    }
}
