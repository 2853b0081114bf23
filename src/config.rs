//! The node's configuration: a TOML file, overridden key by key from the environment
//! (`ZENLIVE_SECTION_KEY`), overridden by command-line flags. Every key has a default, so
//! an empty file (or none) is a working single node. `zenlive.example.toml` documents
//! every key.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file or an environment override is not valid.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration. See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node.
    pub node: NodeConfig,
    /// RTMP ingest and play.
    pub rtmp: RtmpConfig,
    /// The HTTP server: HLS, HTTP-FLV, health.
    pub http: HttpConfig,
    /// HTTPS and WSS: the HTTP routes over TLS.
    pub tls: TlsConfig,
    /// The metrics listener.
    pub metrics: MetricsConfig,
    /// HLS packaging.
    pub hls: HlsConfig,
    /// Who may publish, play and administer.
    pub auth: AuthConfig,
    /// The application's hooks.
    pub hooks: HooksConfig,
    /// Webhooks: events POSTed to URLs.
    pub webhooks: WebhooksConfig,
    /// Chat rooms over WebSocket.
    pub chat: ChatConfig,
    /// Cluster mode: nodes sharing a Redis registry.
    pub cluster: ClusterConfig,
    /// Logging.
    pub log: LogConfig,
}

/// `[node]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// The node's id in a cluster; random when empty.
    pub id: String,
    /// Event-loop threads for streams and viewers; 0 means one per core.
    pub workers: usize,
    /// Seconds a graceful shutdown may take before the process exits anyway.
    pub shutdown_timeout: f64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self { id: String::new(), workers: 0, shutdown_timeout: 10.0 }
    }
}

/// `[rtmp]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtmpConfig {
    /// Whether RTMP is served.
    pub enabled: bool,
    /// Listen address (`HOST:PORT`; a host name is resolved).
    #[serde(deserialize_with = "listen_addr")]
    pub addr: SocketAddr,
    /// Seconds a client has to complete the handshake.
    pub handshake_timeout: f64,
    /// Seconds without any data from a publisher (or a client that has neither published
    /// nor played) before it is disconnected.
    pub idle_timeout: f64,
    /// Most simultaneous RTMP connections.
    pub max_connections: usize,
    /// Most connections one client address may have open that are not admitted yet (still
    /// handshaking, connecting, or not publishing or playing); 0 for no cap.
    pub max_pending_per_address: usize,
    /// Most bytes of partially received RTMP messages on the whole node; a publisher whose
    /// next partial message would go over it is disconnected.
    pub max_partial_bytes: u64,
    /// Seconds a viewer may stay behind the live edge before it is disconnected.
    pub max_viewer_lag: f64,
    /// Seconds of a publisher's data the kernel may gather before the node reads it
    /// (`SO_RCVLOWAT`, on Linux): fewer, larger reads for that much added ingest latency
    /// (up to four times it when a publisher's rate suddenly drops). 0 reads every packet
    /// as it arrives.
    pub publish_read_delay: f64,
    /// Least seconds between two writes to one RTMP or HTTP-FLV player: the frames of that
    /// interval go out in one write, on a tick shared by every player (SRS calls this
    /// merged write). Fewer, larger writes for up to that much added playback latency; 0
    /// writes frames as they arrive.
    pub play_write_delay: f64,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            addr: SocketAddr::from(([0, 0, 0, 0], 1935)),
            handshake_timeout: 10.0,
            idle_timeout: 30.0,
            max_connections: 10_000,
            max_pending_per_address: 64,
            max_partial_bytes: 256 << 20,
            max_viewer_lag: 10.0,
            publish_read_delay: 0.05,
            play_write_delay: 0.1,
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address (`HOST:PORT`; a host name is resolved).
    #[serde(deserialize_with = "listen_addr")]
    pub addr: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { addr: SocketAddr::from(([0, 0, 0, 0], 8080)) }
    }
}

/// `[tls]`: HTTPS and WSS on a listener of their own, with the HTTP port's routes, and
/// RTMPS. On when a certificate and a key are set; SIGHUP reloads them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM (the server's certificate first).
    pub cert: String,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// Where HTTPS listens (`HOST:PORT`; a host name is resolved).
    #[serde(deserialize_with = "listen_addr")]
    pub https_addr: SocketAddr,
    /// Where RTMPS listens (when RTMP is on).
    #[serde(deserialize_with = "listen_addr")]
    pub rtmps_addr: SocketAddr,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: String::new(),
            key: String::new(),
            https_addr: SocketAddr::from(([0, 0, 0, 0], 8443)),
            rtmps_addr: SocketAddr::from(([0, 0, 0, 0], 1936)),
        }
    }
}

impl TlsConfig {
    /// Whether HTTPS is served (a certificate and a key are set).
    pub fn enabled(&self) -> bool {
        !self.cert.is_empty() && !self.key.is_empty()
    }
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Whether the metrics listener runs.
    pub enabled: bool,
    /// Listen address (`HOST:PORT`; a host name is resolved).
    #[serde(deserialize_with = "listen_addr")]
    pub addr: SocketAddr,
    /// Most streams exported with per-stream series (the most watched first); the rest are
    /// counted in `zenlive_metrics_streams_omitted`. Bounds the series count.
    pub max_stream_series: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            addr: SocketAddr::from(([0, 0, 0, 0], 9090)),
            max_stream_series: 1000,
        }
    }
}

/// `[hls]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HlsConfig {
    /// Whether streams are packaged for HLS.
    pub enabled: bool,
    /// Target segment duration in seconds (segments are cut on keyframes).
    pub segment_duration: f64,
    /// Segments in the live playlist.
    pub window: usize,
    /// Seconds a stream's playlist outlives its publisher, so a publisher that reconnects
    /// continues the same playlist (with a discontinuity).
    pub reconnect_grace: f64,
}

impl Default for HlsConfig {
    fn default() -> Self {
        Self { enabled: true, segment_duration: 6.0, window: 6, reconnect_grace: 30.0 }
    }
}

/// `[auth]`: JWT verification. Off unless a secret or public key is set; then publish and
/// play each need a token only when required.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `HS256` (default), `HS384`, `HS512`, `RS256`, `RS384`, `RS512`, `ES256`, `ES384`,
    /// `EdDSA`.
    pub algorithm: String,
    /// The HMAC secret (HS* algorithms).
    pub jwt_secret: String,
    /// PEM file with the public key (RS*, ES*, EdDSA).
    pub public_key: String,
    /// PEM file with the private key, only for minting tokens (`zenlive token`) with an
    /// asymmetric algorithm.
    pub private_key: String,
    /// Required `iss`, when set.
    pub issuer: String,
    /// Required `aud`, when set.
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway: u64,
    /// Publishing needs a token with the `publisher` (or `admin`) role.
    pub require_publish: bool,
    /// Playing needs a token (any role).
    pub require_play: bool,
    /// Seconds an HLS session token in segment URLs stays valid.
    pub session_ttl: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            algorithm: "HS256".to_owned(),
            jwt_secret: String::new(),
            public_key: String::new(),
            private_key: String::new(),
            issuer: String::new(),
            audience: String::new(),
            leeway: 30,
            require_publish: false,
            require_play: false,
            session_ttl: 300,
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches a log.
        f.debug_struct("AuthConfig")
            .field("algorithm", &self.algorithm)
            .field("jwt_secret", &if self.jwt_secret.is_empty() { "" } else { "<set>" })
            .field("public_key", &self.public_key)
            .field("private_key", &self.private_key)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("require_publish", &self.require_publish)
            .field("require_play", &self.require_play)
            .field("session_ttl", &self.session_ttl)
            .finish()
    }
}

/// `[hooks]`: how publish and play deciders (SDK hooks, `webhooks.on_publish_url`) are run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// Seconds a decider may take.
    pub timeout: f64,
    /// `deny` or `allow`: the decision when a decider fails, panics or times out.
    pub on_failure: String,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self { timeout: 3.0, on_failure: "deny".to_owned() }
    }
}

/// `[webhooks]`: stream and viewer events POSTed as signed JSON.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Where events go (each URL gets every event, in order).
    pub urls: Vec<String>,
    /// HMAC-SHA256 key for the `X-ZenLive-Signature` header; unsigned when empty.
    pub secret: String,
    /// Seconds one delivery attempt may take.
    pub timeout: f64,
    /// Events queued per URL; when full, new events are dropped (logged and counted).
    pub queue: usize,
    /// Seconds a failing delivery is retried (with backoff) before it is given up.
    pub retry_for: f64,
    /// A URL asked before every publish: 2xx allows, 4xx refuses.
    pub on_publish_url: String,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            secret: String::new(),
            timeout: 5.0,
            queue: 10_000,
            retry_for: 300.0,
            on_publish_url: String::new(),
        }
    }
}

impl std::fmt::Debug for WebhooksConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhooksConfig")
            .field("urls", &self.urls)
            .field("secret", &if self.secret.is_empty() { "" } else { "<set>" })
            .field("timeout", &self.timeout)
            .field("queue", &self.queue)
            .field("retry_for", &self.retry_for)
            .field("on_publish_url", &self.on_publish_url)
            .finish()
    }
}

/// `[chat]`: a chat room beside every stream (and rooms of their own), over WebSocket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatConfig {
    /// Whether `/chat/{app}/{key}` is served.
    pub enabled: bool,
    /// Recent messages a joining member receives (kept in memory only).
    pub history: usize,
    /// Longest message, in characters.
    pub max_length: usize,
    /// Words refused in messages (case-insensitive).
    pub blocked_words: Vec<String>,
    /// Most members per room.
    pub max_members: usize,
    /// Messages a user may send in a burst.
    pub burst: u32,
    /// Messages per second a user's allowance refills by.
    pub per_second: f64,
    /// Whether members without a token may read (posting always needs one, with a name).
    pub anonymous_read: bool,
    /// Largest WebSocket frame accepted, in bytes; larger frames close the connection
    /// before they are buffered.
    pub max_frame: usize,
    /// Frames queued for one member; a member that falls this far behind is disconnected.
    pub member_queue: usize,
    /// Rooms with more members than this stop broadcasting `join`/`leave`.
    pub presence_limit: usize,
    /// Most rooms clients may open on this node (rooms are named by clients).
    pub max_rooms: usize,
    /// Most open rooms without a live stream one client address may have opened (such a
    /// room counts against the address that started it until it closes); 0 for no cap.
    pub max_rooms_per_address: usize,
    /// Who may open the room of a stream that is not live: `signed_in` (a valid token),
    /// `anyone`, or `none` (rooms exist only beside live streams; the application can still
    /// open any room). Joining a room that is open is never affected.
    pub rooms_without_stream: String,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            history: 50,
            max_length: 500,
            blocked_words: Vec::new(),
            max_members: 10_000,
            burst: 10,
            per_second: 5.0,
            anonymous_read: true,
            max_frame: 16 * 1024,
            member_queue: 256,
            presence_limit: 100,
            max_rooms: 10_000,
            max_rooms_per_address: 32,
            rooms_without_stream: "signed_in".to_owned(),
        }
    }
}

/// `[cluster]`: nodes that share one Redis form a cluster; a stream published on one node
/// can be watched from any other. See `docs/scaling.md`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Whether the node joins a cluster (the registry in Redis) instead of running alone.
    pub enabled: bool,
    /// The Redis that holds the registry (`redis://host:port/db`).
    pub redis_url: String,
    /// Prefix of every Redis key, so several clusters can share one Redis.
    pub key_prefix: String,
    /// Where this node listens for other nodes (relays and messages).
    #[serde(deserialize_with = "listen_addr")]
    pub addr: SocketAddr,
    /// The host other nodes and clients reach this node at; empty means the cluster
    /// listener's IP (which must then not be a wildcard like 0.0.0.0).
    pub advertise_host: String,
    /// A secret every node of the cluster shares, at least 16 characters: links between
    /// nodes prove it, and HLS session URLs signed on one node are accepted by all. Cluster
    /// mode does not start without it.
    pub secret: String,
    /// Seconds an edge keeps relaying a stream nobody on it watches.
    pub relay_idle: f64,
    /// Seconds an edge looks for a stream's new owner after its origin went away, before
    /// ending the stream for its viewers.
    pub relay_grace: f64,
    /// Seconds a link from another node may carry nothing before it is closed (a node
    /// closes the links it opened after half this much idleness, and reopens on demand).
    pub link_idle_timeout: f64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            redis_url: "redis://127.0.0.1:6379/".to_owned(),
            key_prefix: "zenlive:".to_owned(),
            addr: SocketAddr::from(([127, 0, 0, 1], 7946)),
            advertise_host: String::new(),
            secret: String::new(),
            relay_idle: 15.0,
            relay_grace: 15.0,
            link_idle_timeout: 60.0,
        }
    }
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("enabled", &self.enabled)
            .field("redis_url", &"<redacted>")
            .field("key_prefix", &self.key_prefix)
            .field("addr", &self.addr)
            .field("advertise_host", &self.advertise_host)
            .field("secret", &if self.secret.is_empty() { "" } else { "<redacted>" })
            .field("relay_idle", &self.relay_idle)
            .field("relay_grace", &self.relay_grace)
            .field("link_idle_timeout", &self.link_idle_timeout)
            .finish()
    }
}

impl ClusterConfig {
    /// The host this node advertises to the cluster.
    pub fn advertised_host(&self) -> String {
        if self.advertise_host.is_empty() {
            self.addr.ip().to_string()
        } else {
            self.advertise_host.clone()
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// A `tracing` filter such as `info` or `zenlive=debug,info`; `RUST_LOG` wins if set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: "text".to_owned(), level: "info".to_owned() }
    }
}

/// Parses a listen address: `IP:PORT`, or `HOST:PORT` with the host resolved (an IPv4
/// address first). The error says what form is expected.
pub fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let expected = "expected HOST:PORT such as 0.0.0.0:1935, [::]:1935 or localhost:1935";
    let resolved: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|e| format!("{expected}, got {text:?} ({e})"))?
        .collect();
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| format!("{expected}, got {text:?} (it resolves to no address)"))
}

fn listen_addr<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_listen_addr(&text).map_err(serde::de::Error::custom)
}

/// The levels a `log.level` directive may name.
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks `log.level`: a level (`info`), or comma-separated directives each a level or
/// `target=level` (`zenlive=debug,info`). Anything else would silently log nothing.
fn check_log_level(level: &str) -> Result<(), ConfigError> {
    let known = |name: &str| LOG_LEVELS.contains(&name.trim().to_ascii_lowercase().as_str());
    let bad = level.split(',').find(|directive| match directive.split_once('=') {
        Some((target, name)) => target.trim().is_empty() || !known(name),
        None => !known(directive),
    });
    match bad {
        Some(directive) => Err(ConfigError::Invalid(format!(
            "log.level: {directive:?} is not a level or target=level (levels: {})",
            LOG_LEVELS.join(", ")
        ))),
        None => Ok(()),
    }
}

/// Shortest `cluster.secret` accepted.
pub const MIN_CLUSTER_SECRET: usize = 16;

/// A clear error naming `key` unless `value` lies in `range`.
fn within<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    unit: &str,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(ConfigError::Invalid(format!(
        "{key} must be between {} and {} {unit} (got {value})",
        range.start(),
        range.end()
    )))
}

/// Seconds from the configuration as a `Duration` (negative or invalid values become 0).
pub fn secs(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::ZERO)
}

impl Config {
    /// Loads `path` (if given), then applies `ZENLIVE_*` variables from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, env)?;
        // toml's error names the key it is about on a line of its own: one line here.
        let config: Config =
            toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| {
                ConfigError::Invalid(e.to_string().trim().replace('\n', " "))
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value against its range and the combinations that cannot work;
    /// [`Config::load`] and [`NodeBuilder::start`](crate::NodeBuilder::start) call it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        within("hls.segment_duration", self.hls.segment_duration, 0.5..=60.0, "seconds")?;
        within("hls.window", self.hls.window, 2..=100, "segments")?;
        within("rtmp.publish_read_delay", self.rtmp.publish_read_delay, 0.0..=1.0, "seconds")?;
        // A player's queue (96 frames) holds about a second of 30 fps video and its audio;
        // a batch must fit in it with room to spare.
        within("rtmp.play_write_delay", self.rtmp.play_write_delay, 0.0..=0.5, "seconds")?;
        within(
            "cluster.link_idle_timeout",
            self.cluster.link_idle_timeout,
            1.0..=3600.0,
            "seconds",
        )?;
        let day = 86_400.0;
        for (key, value, range) in [
            ("node.shutdown_timeout", self.node.shutdown_timeout, 0.0..=day),
            ("rtmp.handshake_timeout", self.rtmp.handshake_timeout, 0.1..=day),
            ("rtmp.idle_timeout", self.rtmp.idle_timeout, 0.1..=day),
            ("rtmp.max_viewer_lag", self.rtmp.max_viewer_lag, 0.1..=day),
            ("hls.reconnect_grace", self.hls.reconnect_grace, 0.0..=day),
            ("hooks.timeout", self.hooks.timeout, 0.001..=day),
            ("webhooks.timeout", self.webhooks.timeout, 0.001..=day),
            ("webhooks.retry_for", self.webhooks.retry_for, 0.0..=7.0 * day),
            ("cluster.relay_idle", self.cluster.relay_idle, 0.1..=day),
            ("cluster.relay_grace", self.cluster.relay_grace, 0.0..=day),
        ] {
            within(key, value, range, "seconds")?;
        }
        within(
            "chat.per_second",
            self.chat.per_second,
            0.001..=1_000_000.0,
            "messages per second",
        )?;
        within("auth.session_ttl", self.auth.session_ttl, 1..=86_400, "seconds")?;
        for (key, value) in [
            ("rtmp.max_connections", self.rtmp.max_connections),
            ("chat.max_frame", self.chat.max_frame),
            ("chat.member_queue", self.chat.member_queue),
            ("chat.max_members", self.chat.max_members),
            ("chat.max_length", self.chat.max_length),
            ("chat.burst", self.chat.burst as usize),
            ("webhooks.queue", self.webhooks.queue),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{key} must be at least 1 (got 0)")));
            }
        }
        check_log_level(&self.log.level)?;
        if self.tls.cert.is_empty() != self.tls.key.is_empty() {
            return Err(ConfigError::Invalid(
                "tls.cert and tls.key go together: set both (PEM files) or neither".into(),
            ));
        }
        crate::auth::Auth::new(&self.auth).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if !matches!(self.hooks.on_failure.as_str(), "deny" | "allow") {
            return Err(ConfigError::Invalid(
                "hooks.on_failure must be \"deny\" or \"allow\"".into(),
            ));
        }
        let urls = self
            .webhooks
            .urls
            .iter()
            .chain(Some(&self.webhooks.on_publish_url).filter(|u| !u.is_empty()));
        for url in urls {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "webhook URL {url:?} must be http:// or https://"
                )));
            }
        }
        if self.cluster.enabled
            && self.cluster.advertise_host.is_empty()
            && self.cluster.addr.ip().is_unspecified()
        {
            return Err(ConfigError::Invalid(
                "cluster.addr listens on every address: set cluster.advertise_host to the \
                 address other nodes reach this one at"
                    .into(),
            ));
        }
        if self.cluster.enabled && self.node.id.contains(['|', ':', ' ']) {
            return Err(ConfigError::Invalid("node.id may not contain '|', ':' or spaces".into()));
        }
        if !matches!(self.chat.rooms_without_stream.as_str(), "signed_in" | "anyone" | "none") {
            return Err(ConfigError::Invalid(format!(
                "chat.rooms_without_stream must be \"signed_in\", \"anyone\" or \"none\" (got {:?})",
                self.chat.rooms_without_stream
            )));
        }
        if self.cluster.enabled && self.cluster.secret.len() < MIN_CLUSTER_SECRET {
            return Err(ConfigError::Invalid(format!(
                "cluster mode needs cluster.secret (ZENLIVE_CLUSTER_SECRET), at least \
                 {MIN_CLUSTER_SECRET} characters and the same on every node: without it anyone \
                 who reaches cluster.addr could pull every stream and post in every chat \
                 room. Make one with `openssl rand -hex 32`"
            )));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid("log.format must be \"text\" or \"json\"".into()));
        }
        Ok(())
    }
}

/// Applies `ZENLIVE_SECTION_KEY=value` overrides. Each value takes the type of the key it
/// sets: a string key gets the text as it is (`ZENLIVE_NODE_ID=1` is the id "1"); numbers
/// and booleans are parsed; a list is a TOML array (`["a","b"]`) or comma-separated
/// (`a,b`). A variable that names no section or key is an error naming it.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let defaults = toml::Table::try_from(Config::default())
        .map_err(|e| ConfigError::Invalid(format!("the defaults do not serialize: {e}")))?;
    let sections = || defaults.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("ZENLIVE_") else { continue };
        let rest = rest.to_ascii_lowercase();
        let (section, key) = rest.split_once('_').unwrap_or((rest.as_str(), ""));
        let Some(toml::Value::Table(known)) = defaults.get(section) else {
            return Err(ConfigError::Invalid(format!(
                "{name}: no configuration section [{section}] (sections: {}); variables are \
                 ZENLIVE_SECTION_KEY",
                sections()
            )));
        };
        let Some(default) = known.get(key) else {
            let keys = known.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
            return Err(ConfigError::Invalid(format!(
                "{name}: [{section}] has no key {key:?} (keys: {keys})"
            )));
        };
        let parsed = env_value(default, &value).map_err(|expected| {
            ConfigError::Invalid(format!("{name}: expected {expected}, got {value:?}"))
        })?;
        let entry = table
            .entry(section.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(section_table) = entry else {
            return Err(ConfigError::Invalid(format!("[{section}] must be a table")));
        };
        section_table.insert(key.to_owned(), parsed);
    }
    Ok(())
}

/// `text` as a value of the type of `default`, or what was expected.
fn env_value(default: &toml::Value, text: &str) -> Result<toml::Value, &'static str> {
    let scalar =
        || format!("v = {text}").parse::<toml::Table>().ok().and_then(|mut t| t.remove("v"));
    match default {
        toml::Value::String(_) => Ok(toml::Value::String(text.to_owned())),
        toml::Value::Boolean(_) => match text {
            "true" | "1" | "yes" | "on" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(toml::Value::Boolean(false)),
            _ => Err("true or false"),
        },
        toml::Value::Integer(_) => match scalar() {
            Some(value @ toml::Value::Integer(_)) => Ok(value),
            _ => Err("a whole number"),
        },
        toml::Value::Float(_) => match scalar() {
            Some(toml::Value::Integer(n)) => Ok(toml::Value::Float(n as f64)),
            Some(value @ toml::Value::Float(_)) => Ok(value),
            _ => Err("a number"),
        },
        toml::Value::Array(_) if text.trim_start().starts_with('[') => match scalar() {
            Some(value @ toml::Value::Array(_)) => Ok(value),
            _ => Err("a TOML array such as [\"a\", \"b\"], or a comma-separated list"),
        },
        toml::Value::Array(_) => Ok(toml::Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| toml::Value::String(item.to_owned()))
                .collect(),
        )),
        _ => scalar().ok_or("a TOML value"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_match_the_design() {
        let c = Config::load(None, env(&[])).expect("defaults");
        assert_eq!(c.rtmp.addr.to_string(), "0.0.0.0:1935");
        assert_eq!(c.http.addr.to_string(), "0.0.0.0:8080");
        assert_eq!(c.metrics.addr.to_string(), "0.0.0.0:9090");
        assert_eq!(c.hls.segment_duration, 6.0);
    }

    #[test]
    fn the_example_file_documents_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("zenlive.example.toml");
        let c = Config::load(Some(&path), env(&[])).expect("the example parses");
        assert_eq!(c, Config::default());
        // And names every key.
        let text = std::fs::read_to_string(&path).expect("read the example");
        let example: toml::Table = text.parse().expect("TOML");
        let defaults = toml::Table::try_from(Config::default()).expect("serializable");
        for (section, keys) in &defaults {
            let keys = keys.as_table().expect("a section");
            for key in keys.keys() {
                let present = example.get(section).and_then(|s| s.get(key)).is_some();
                assert!(present, "zenlive.example.toml lacks {section}.{key}");
            }
        }
    }

    #[test]
    fn environment_overrides_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("z.toml");
        std::fs::write(&path, "[hls]\nsegment_duration = 4\n[rtmp]\naddr = \"127.0.0.1:1\"\n")
            .expect("write");
        let c = Config::load(
            Some(&path),
            env(&[
                ("ZENLIVE_HLS_SEGMENT_DURATION", "2"),
                ("ZENLIVE_HTTP_ADDR", "127.0.0.1:8081"),
                ("OTHER", "x"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.hls.segment_duration, 2.0);
        assert_eq!(c.http.addr.to_string(), "127.0.0.1:8081");
        assert_eq!(c.rtmp.addr.to_string(), "127.0.0.1:1");
    }

    #[test]
    fn environment_values_take_their_keys_types() {
        let c = Config::load(
            None,
            env(&[
                ("ZENLIVE_NODE_ID", "1"),
                ("ZENLIVE_CLUSTER_SECRET", "12345678901234567890"),
                ("ZENLIVE_HLS_ENABLED", "false"),
                ("ZENLIVE_HLS_SEGMENT_DURATION", "2"),
                ("ZENLIVE_CHAT_BLOCKED_WORDS", "spam, scam"),
                ("ZENLIVE_WEBHOOKS_URLS", r#"["http://a/", "http://b/"]"#),
                ("ZENLIVE_LOG_LEVEL", "zenlive=debug,warn"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.node.id, "1");
        assert_eq!(c.cluster.secret, "12345678901234567890");
        assert!(!c.hls.enabled);
        assert_eq!(c.hls.segment_duration, 2.0);
        assert_eq!(c.chat.blocked_words, ["spam", "scam"]);
        assert_eq!(c.webhooks.urls, ["http://a/", "http://b/"]);
        let err = Config::load(None, env(&[("ZENLIVE_HSL_WINDOW", "3")])).expect_err("a typo");
        assert!(err.to_string().contains("ZENLIVE_HSL_WINDOW"), "{err}");
        let err = Config::load(None, env(&[("ZENLIVE_LOG_LEVEL", "verbose")])).expect_err("level");
        assert!(err.to_string().contains("verbose") && err.to_string().contains("info"), "{err}");
    }

    #[test]
    fn bad_values_are_clear_errors() {
        for (k, v) in [
            ("ZENLIVE_HLS_SEGMENT_DURATION", "0"),
            ("ZENLIVE_RTMP_ADDR", "nowhere"),
            ("ZENLIVE_HLS_BOGUS", "1"),
            ("ZENLIVE_HSL_WINDOW", "3"),
            ("ZENLIVE_HLS_WINDOW", "three"),
            ("ZENLIVE_HLS_ENABLED", "maybe"),
            ("ZENLIVE_LOG_LEVEL", "verbose"),
            ("ZENLIVE_LOG_LEVEL", "zenlive=loud"),
            ("ZENLIVE_RTMP_IDLE_TIMEOUT", "-5"),
            ("ZENLIVE_RTMP_HANDSHAKE_TIMEOUT", "0"),
            ("ZENLIVE_HOOKS_TIMEOUT", "-1"),
            ("ZENLIVE_CHAT_PER_SECOND", "0"),
            ("ZENLIVE_RTMP_PUBLISH_READ_DELAY", "2"),
            ("ZENLIVE_RTMP_PLAY_WRITE_DELAY", "-0.1"),
            ("ZENLIVE_RTMP_PLAY_WRITE_DELAY", "0.6"),
        ] {
            let err = Config::load(None, env(&[(k, v)])).expect_err("must fail");
            assert!(matches!(err, ConfigError::Invalid(_)), "{k}={v}: {err}");
        }
        let err = Config::load(None, env(&[("ZENLIVE_RTMP_PLAY_WRITE_DELAY", "0.6")]))
            .expect_err("must fail");
        assert_eq!(
            err.to_string(),
            ConfigError::Invalid(
                "rtmp.play_write_delay must be between 0 and 0.5 seconds (got 0.6)".into()
            )
            .to_string()
        );
    }
}
