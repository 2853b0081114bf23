//! The node's configuration: a TOML file, overridden key by key from the environment
//! (`ZENLIVE_SECTION_KEY`), overridden by command-line flags. Every key has a default, so
//! an empty file (or none) is a working single node. `zenlive.example.toml` documents
//! every key.
//!
//! Durations are `std::time::Duration`, written `"30s"`, `"500ms"`, `"2m"` or as a number
//! of seconds (`10`, `0.05`), and printed in the human form. Keys with a closed set of
//! values are enums. [`Config::validate`] checks every key against its range and names the
//! key, its value and what is allowed. Keys that moved ([`DEPRECATED_KEYS`]) keep working,
//! with a [`Deprecated`] warning naming the new key.

use std::collections::HashMap;
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
    /// How players (RTMP, HTTP-FLV, relays to other nodes) are written to.
    pub play: PlayConfig,
    /// The HTTP server: HLS, HTTP-FLV, health.
    pub http: HttpConfig,
    /// HTTPS and WSS: the HTTP routes over TLS.
    pub tls: TlsConfig,
    /// The metrics listener.
    pub metrics: MetricsConfig,
    /// HLS packaging.
    pub hls: HlsConfig,
    /// Recording streams to files.
    pub recording: RecordingConfig,
    /// Where recordings are stored.
    pub storage: StorageConfig,
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
    /// WebRTC: WHIP ingest on the HTTP port, media on one UDP port.
    pub webrtc: WebRtcConfig,
    /// The web pages the node serves (home, watch, console).
    pub ui: UiConfig,
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
    /// How long a graceful shutdown may take before the process exits anyway.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self { id: String::new(), workers: 0, shutdown_timeout: Duration::from_secs(10) }
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
    /// How long a client has to complete the handshake.
    #[serde(with = "duration")]
    pub handshake_timeout: Duration,
    /// How long a publisher (or a client that has neither published nor played) may send
    /// nothing before it is disconnected.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Most simultaneous RTMP connections.
    pub max_connections: usize,
    /// Most connections one client address may have open that are not admitted yet (still
    /// handshaking, connecting, or not publishing or playing); 0 for no cap.
    pub max_pending_per_address: usize,
    /// Most bytes of partially received RTMP messages on the whole node; a publisher whose
    /// next partial message would go over it is disconnected.
    pub max_partial_bytes: u64,
    /// How much of a publisher's data the kernel may gather before the node reads it
    /// (`SO_RCVLOWAT`, on Linux): fewer, larger reads for that much added ingest latency
    /// (up to four times it when a publisher's rate suddenly drops). 0 reads every packet
    /// as it arrives.
    #[serde(with = "duration")]
    pub publish_read_delay: Duration,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            addr: SocketAddr::from(([0, 0, 0, 0], 1935)),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_pending_per_address: 64,
            max_partial_bytes: 256 << 20,
            publish_read_delay: Duration::from_millis(50),
        }
    }
}

/// `[play]`: how the node writes to its players, RTMP and HTTP-FLV alike (and, for
/// `max_viewer_lag`, to the other nodes that relay its streams). These keys were
/// `rtmp.max_viewer_lag` and `rtmp.play_write_delay`, which still work (see
/// [`DEPRECATED_KEYS`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlayConfig {
    /// How long a viewer may stay behind the live edge before it is disconnected (one that
    /// falls behind first skips ahead to the next keyframe).
    #[serde(with = "duration")]
    pub max_viewer_lag: Duration,
    /// Least time between two writes to one RTMP or HTTP-FLV player: the frames of that
    /// interval go out in one write, on a tick shared by every player (SRS calls this
    /// merged write). Fewer, larger writes for up to that much added playback latency; 0
    /// writes frames as they arrive.
    #[serde(with = "duration")]
    pub write_delay: Duration,
}

impl Default for PlayConfig {
    fn default() -> Self {
        Self { max_viewer_lag: Duration::from_secs(10), write_delay: Duration::from_millis(100) }
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
    /// Target segment duration (segments are cut on keyframes).
    #[serde(with = "duration")]
    pub segment_duration: Duration,
    /// Segments in the live playlist.
    pub window: usize,
    /// How long a stream's playlist outlives its publisher, so a publisher that reconnects
    /// continues the same playlist (with a discontinuity).
    #[serde(with = "duration")]
    pub reconnect_grace: Duration,
    /// Low-Latency HLS beside the MPEG-TS playlist: `/{app}/{key}/ll.m3u8`, fMP4 parts
    /// (when `enabled`). On by default; with `storage = "files"` only the segment being
    /// built is in memory, complete ones go to the spool.
    pub ll: bool,
    /// LL-HLS part target duration.
    #[serde(with = "duration")]
    pub part_duration: Duration,
    /// LL-HLS segment target duration (segments are cut on keyframes).
    #[serde(with = "duration")]
    pub ll_segment_duration: Duration,
    /// Where finished segments are kept: `files` (the default: in `spool_dir`, paged and
    /// cached by the kernel, off the node's heap) or `memory` (in the node's heap).
    pub storage: HlsStorage,
    /// The spool directory of `storage = "files"` (created when needed); each running node
    /// keeps its segments in a subdirectory of its own, and a node that starts removes the
    /// subdirectories that no running node holds. Empty: `zenlive-hls` in the system's
    /// temporary directory (`$TMPDIR`, else `/tmp`).
    pub spool_dir: String,
}

impl Default for HlsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            segment_duration: Duration::from_secs(6),
            window: 6,
            reconnect_grace: Duration::from_secs(30),
            ll: true,
            part_duration: Duration::from_millis(333),
            ll_segment_duration: Duration::from_secs(2),
            storage: HlsStorage::Files,
            spool_dir: String::new(),
        }
    }
}

impl HlsConfig {
    /// The spool directory `spool_dir` names, or the default one.
    pub fn spool_path(&self) -> std::path::PathBuf {
        if self.spool_dir.is_empty() {
            std::env::temp_dir().join("zenlive-hls")
        } else {
            std::path::PathBuf::from(&self.spool_dir)
        }
    }
}

/// `hls.storage`: where finished HLS segments are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HlsStorage {
    /// Files in `hls.spool_dir`: the kernel's page cache holds them, not the heap.
    Files,
    /// The node's heap.
    Memory,
}

/// `[recording]`: streams recorded to segment files (see `src/recording/`). Off by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordingConfig {
    /// Whether this node records at all: the recorder runs, and streams can be recorded on
    /// request (a publish decider's answer, or by name through the SDK and the admin API).
    pub enabled: bool,
    /// Whether streams are recorded without being asked: those `paths` selects. `false`
    /// records only what is asked for (nginx-rtmp's `record manual`).
    pub auto: bool,
    /// The segment container.
    pub format: RecordingFormat,
    /// The shortest segment: a segment is cut at the first keyframe after this much media.
    #[serde(with = "duration")]
    pub segment_duration: Duration,
    /// Where each segment goes under `storage.base_path`: a template of `{app}`, `{key}`,
    /// `{ext}` and `{start:FORMAT}` (the segment's first frame's wall-clock time in UTC,
    /// `FORMAT` in strftime's `%Y %m %d %H %M %S`; `{start}` alone is
    /// `%Y-%m-%d_%H-%M-%S`).
    pub path: String,
    /// Which streams are recorded: patterns of `app/key` where `*` matches any run of
    /// name characters (`live/*`, `*/show-*`); empty means every stream.
    pub paths: Vec<String>,
    /// The longest time range one download (`GET /recordings/{app}/{key}?start=&duration=`)
    /// may ask for.
    #[serde(with = "duration")]
    pub max_download: Duration,
    /// The most segment bytes one download may read (it is built in memory).
    pub max_download_bytes: u64,
    /// Local storage only: finished segments older than this are deleted (`0s`: kept
    /// forever). With S3 storage, expire objects with a bucket lifecycle rule instead.
    #[serde(with = "duration")]
    pub delete_after: Duration,
    /// Local storage only: the most bytes finished segments may take on disk; the oldest
    /// are deleted first (`0`: no cap). With S3 storage, `storage.spool_max_bytes` bounds
    /// local disk instead.
    pub max_local_bytes: u64,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            auto: true,
            format: RecordingFormat::Fmp4,
            // 10 s: a finished segment (what an uploader or a download can use) is at most
            // ~10 s behind live and a time range is cut to 10 s, for 360 files an hour.
            // A crash costs at most a fragment (~1 s) whatever this is.
            segment_duration: Duration::from_secs(10),
            path: DEFAULT_RECORDING_PATH.to_owned(),
            paths: Vec::new(),
            max_download: Duration::from_secs(3600),
            max_download_bytes: 512 << 20,
            delete_after: Duration::ZERO,
            max_local_bytes: 0,
        }
    }
}

/// The default `recording.path`.
pub const DEFAULT_RECORDING_PATH: &str = "{app}/{key}/{start:%Y-%m-%d_%H-%M-%S}.{ext}";

/// `recording.format`: the segment container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordingFormat {
    /// Fragmented MP4 (`fmp4`, `.mp4`), the default: a torn file loses at most its last
    /// fragment (about a second).
    #[default]
    Fmp4,
    /// MPEG-TS (`ts`).
    Ts,
    /// FLV (`flv`).
    Flv,
}

impl ChecksumMode {
    /// The value as the configuration writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WhenSupported => "when_supported",
            Self::WhenRequired => "when_required",
        }
    }
}

impl RecordingFormat {
    /// Every value, in the order the documentation lists them.
    pub const ALL: [Self; 3] = [Self::Fmp4, Self::Ts, Self::Flv];

    /// The segment files' extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Fmp4 => "mp4",
            Self::Ts => "ts",
            Self::Flv => "flv",
        }
    }

    /// The value as the configuration writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fmp4 => "fmp4",
            Self::Ts => "ts",
            Self::Flv => "flv",
        }
    }
}

/// `[storage]`: where recordings go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `local`: files under `base_path`; `s3`: written under `base_path` first (the
    /// spool), then uploaded to `[storage.s3]` and deleted locally.
    #[serde(rename = "type")]
    pub kind: StorageKind,
    /// The directory recordings are written under (created when needed). With S3 storage,
    /// the upload spool: it must belong to this node alone.
    pub base_path: String,
    /// S3 storage: the most bytes of finished segments waiting for upload. When the spool
    /// is full (S3 has been unreachable for a while), new segments are not started, loudly
    /// (an error log and `zenlive_recording_segments_skipped_total`), until uploads make
    /// room; nothing already recorded is deleted.
    pub spool_max_bytes: u64,
    /// The S3 bucket and how to reach it (`storage.type = "s3"`).
    pub s3: S3Config,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            kind: StorageKind::Local,
            base_path: "./recordings".to_owned(),
            // About 11 hours of a 2 Mbit/s stream, or an hour of 20 such streams.
            spool_max_bytes: 10 << 30,
            s3: S3Config::default(),
        }
    }
}

/// `[storage.s3]`: an S3 bucket (AWS or any S3-compatible server). Credentials come from
/// the usual AWS chain: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE` and
/// `~/.aws`, web identity, ECS or EC2 instance roles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// The bucket (it must exist).
    pub bucket: String,
    /// The region (S3-compatible servers take any, often `us-east-1`).
    pub region: String,
    /// The endpoint URL of an S3-compatible server (`http://127.0.0.1:8333`); empty: AWS.
    pub endpoint: String,
    /// Path-style URLs (`endpoint/bucket/key`), which most S3-compatible servers need.
    pub force_path_style: bool,
    /// Prepended to every object key (`recordings/`); the rest of the key is the segment's
    /// path under `storage.base_path`.
    pub prefix: String,
    /// `when_supported` (the SDK's default: a CRC checksum on every upload) or
    /// `when_required`, for S3-compatible servers that reject the SDK's checksums.
    pub request_checksum_calculation: ChecksumMode,
    /// Longest one HTTP attempt may take (connect to last byte).
    #[serde(with = "duration")]
    pub attempt_timeout: Duration,
    /// Longest one operation may take, its retries included.
    #[serde(with = "duration")]
    pub operation_timeout: Duration,
    /// Segments larger than this are uploaded in parts (multipart upload); smaller ones
    /// with one PutObject.
    pub multipart_threshold: u64,
    /// The size of each part of a multipart upload (S3's minimum is 5 MiB).
    pub part_size: u64,
    /// Uploads in flight at once (each stream's segments go one at a time, in order).
    pub concurrency: usize,
    /// The longest wait between two attempts of a failing upload (waits double from
    /// 500 ms up to this).
    #[serde(with = "duration")]
    pub max_backoff: Duration,
    /// How playback serves segments from the bucket: `proxy` (the node reads them from S3
    /// and answers with their bytes) or `redirect` (the node answers 302 to a presigned
    /// GET URL, so the bytes go from S3 to the player; the endpoint must be reachable by
    /// players, and the bucket must allow their origin for browser players).
    pub playback: S3Playback,
    /// `playback = "redirect"`: how long a presigned URL is good for.
    #[serde(with = "duration")]
    pub presign_expiry: Duration,
}

/// `storage.s3.playback`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum S3Playback {
    /// The node reads segments from S3 and serves them.
    #[default]
    Proxy,
    /// The node redirects to presigned URLs.
    Redirect,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            region: "us-east-1".to_owned(),
            endpoint: String::new(),
            force_path_style: false,
            prefix: String::new(),
            request_checksum_calculation: ChecksumMode::WhenSupported,
            attempt_timeout: Duration::from_secs(30),
            operation_timeout: Duration::from_secs(120),
            multipart_threshold: 64 << 20,
            part_size: 16 << 20,
            concurrency: 4,
            max_backoff: Duration::from_secs(30),
            playback: S3Playback::Proxy,
            presign_expiry: Duration::from_secs(300),
        }
    }
}

/// `storage.s3.request_checksum_calculation`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumMode {
    /// A checksum on every request that supports one (the SDK's default).
    #[default]
    WhenSupported,
    /// Only where the operation requires one.
    WhenRequired,
}

/// `storage.type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// Local disk (`local`).
    #[default]
    Local,
    /// An S3 bucket, through a local spool (`s3`).
    S3,
}

/// `[auth]`: JWT verification. Off unless a secret or public key is set; then publish and
/// play each need a token only when required.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// How tokens are signed: `HS256` (default), `HS384`, `HS512`, `RS256`, `RS384`,
    /// `RS512`, `ES256`, `ES384`, `EdDSA`.
    pub algorithm: JwtAlgorithm,
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
    /// Clock skew allowed on `exp` and `nbf` (whole seconds: JWT times are in seconds).
    #[serde(with = "duration")]
    pub leeway: Duration,
    /// Publishing needs a token with the `publisher` (or `admin`) role.
    pub require_publish: bool,
    /// Playing needs a token (any role).
    pub require_play: bool,
    /// How long an HLS session token in segment URLs stays valid (whole seconds).
    #[serde(with = "duration")]
    pub session_ttl: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            algorithm: JwtAlgorithm::default(),
            jwt_secret: String::new(),
            public_key: String::new(),
            private_key: String::new(),
            issuer: String::new(),
            audience: String::new(),
            leeway: Duration::from_secs(30),
            require_publish: false,
            require_play: false,
            session_ttl: Duration::from_secs(300),
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
    /// How long a decider may take.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// `deny` or `allow`: the decision when a decider fails, panics or times out.
    pub on_failure: OnFailure,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(3), on_failure: OnFailure::Deny }
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
    /// How long one delivery attempt may take.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Events queued per URL; when full, new events are dropped (logged and counted).
    pub queue: usize,
    /// How long a failing delivery is retried (with backoff) before it is given up.
    #[serde(with = "duration")]
    pub retry_for: Duration,
    /// A URL asked before every publish: 2xx allows, 4xx refuses.
    pub on_publish_url: String,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            secret: String::new(),
            timeout: Duration::from_secs(5),
            queue: 10_000,
            retry_for: Duration::from_secs(300),
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
    pub rooms_without_stream: RoomsWithoutStream,
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
            rooms_without_stream: RoomsWithoutStream::SignedIn,
        }
    }
}

/// `[webrtc]`: WHIP ingest (`POST /whip/{app}/{key}` on the HTTP port) and WHEP playback
/// (`POST /whep/{app}/{key}`). The node is ICE-lite: every session's media uses one UDP
/// port. See `docs/webrtc.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebRtcConfig {
    /// Whether WHIP and WHEP are served and the UDP port bound.
    pub enabled: bool,
    /// The UDP port every session's media uses (`HOST:PORT`; a host name is resolved).
    #[serde(deserialize_with = "listen_addr")]
    pub udp_addr: SocketAddr,
    /// The addresses advertised to clients as ICE candidates (`IP` with the UDP port, or
    /// `IP:PORT` when a NAT maps another port). Empty: the UDP address's IP when it is not
    /// a wildcard, else the local address the client's WHIP request arrived on.
    pub public_addrs: Vec<String>,
    /// STUN/TURN server URLs handed to clients in WHIP and WHEP `Link` headers
    /// (`stun:host:port`, `turn:host:port?transport=udp`).
    pub ice_servers: Vec<String>,
    /// How long a session may take from its offer to a connected peer before it is ended
    /// (and its stream name freed).
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// How long a connected session may receive nothing before it is ended.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Most WHIP and WHEP sessions on the node at once, together (connected or not).
    pub max_sessions: usize,
    /// ICE-TCP (RFC 6544), for clients on networks that block UDP: the one TCP port every
    /// session may also use (`HOST:PORT`, e.g. `0.0.0.0:8189`). Empty (the default): off.
    /// When set, every answer also advertises passive TCP host candidates (lower priority
    /// than the UDP ones) on the same addresses as UDP, with this port.
    pub tcp_addr: String,
    /// Whether answers advertise the UDP candidates. `false` offers only ICE-TCP (it needs
    /// `tcp_addr`): for a node behind a network that passes no UDP at all.
    pub udp_candidates: bool,
    /// How the UDP port sends: `gso` (the default: batches of equal-size datagrams in one
    /// system call with UDP GSO on Linux, falling back by itself where the kernel refuses
    /// it), `sendmmsg` (batches without GSO) or `sendto` (one system call per datagram).
    pub udp_send: UdpSend,
}

/// `webrtc.udp_send`: how media datagrams leave the UDP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UdpSend {
    /// Batches with UDP generic segmentation offload (Linux), else as `Sendmmsg`.
    #[default]
    Gso,
    /// Batches of datagrams in one `sendmmsg`.
    Sendmmsg,
    /// One `sendto` per datagram.
    Sendto,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            udp_addr: SocketAddr::from(([0, 0, 0, 0], 8189)),
            public_addrs: Vec::new(),
            ice_servers: Vec::new(),
            connect_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(30),
            max_sessions: 1000,
            tcp_addr: String::new(),
            udp_candidates: true,
            udp_send: UdpSend::Gso,
        }
    }
}

impl WebRtcConfig {
    /// The ICE-TCP listening address, `None` when `tcp_addr` is empty (ICE-TCP off), or an
    /// error when it is not an address.
    pub fn tcp_socket_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let text = self.tcp_addr.trim();
        if text.is_empty() {
            return Ok(None);
        }
        parse_listen_addr(text)
            .map(Some)
            .map_err(|expected| invalid("webrtc.tcp_addr", format!("{text:?}"), expected))
    }

    /// The advertised candidate addresses (`public_addrs` resolved against the UDP port),
    /// or an error naming the entry that is neither `IP` nor `IP:PORT`.
    pub fn public_socket_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        self.public_addrs
            .iter()
            .map(|text| {
                let text = text.trim();
                text.parse::<SocketAddr>()
                    .or_else(|_| {
                        text.parse::<std::net::IpAddr>()
                            .map(|ip| SocketAddr::new(ip, self.udp_addr.port()))
                    })
                    .map_err(|_| {
                        invalid(
                            "webrtc.public_addrs",
                            format!("{text:?}"),
                            "expected IP or IP:PORT",
                        )
                    })
            })
            .collect()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.public_socket_addrs()?;
        if self.tcp_socket_addr()?.is_none() && !self.udp_candidates {
            return Err(invalid(
                "webrtc.udp_candidates",
                "false".to_owned(),
                "with no webrtc.tcp_addr a client would have no candidate at all",
            ));
        }
        let schemes = ["stun:", "stuns:", "turn:", "turns:"];
        if let Some(url) = self.ice_servers.iter().find(|url| {
            !schemes.iter().any(|s| url.starts_with(s)) || url.contains(['<', '>', '"', ',', ' '])
        }) {
            return Err(invalid(
                "webrtc.ice_servers",
                format!("{url:?}"),
                "expected a stun:, stuns:, turn: or turns: URL",
            ));
        }
        Ok(())
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
    /// How long an edge keeps relaying a stream nobody on it watches.
    #[serde(with = "duration")]
    pub relay_idle: Duration,
    /// How long an edge looks for a stream's new owner after its origin went away, before
    /// ending the stream for its viewers.
    #[serde(with = "duration")]
    pub relay_grace: Duration,
    /// How long a link from another node may carry nothing before it is closed (a node
    /// closes the links it opened after half this much idleness, and reopens on demand).
    #[serde(with = "duration")]
    pub link_idle_timeout: Duration,
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
            relay_idle: Duration::from_secs(15),
            relay_grace: Duration::from_secs(15),
            link_idle_timeout: Duration::from_secs(60),
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

/// `[ui]`: the web pages on the HTTP port ([`crate::ui`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiConfig {
    /// Whether the pages (`/`, `/watch/{app}/{key}`, `/publish/{app}/{key}`, `/console`) and
    /// their assets are served.
    pub enabled: bool,
    /// The name the pages show in their heading and title.
    pub title: String,
    /// Whether `GET /api/v1/live` lists the live streams to anyone who may play them (what
    /// the home page shows); off, the home page only offers a field for a stream's name.
    /// Served only while `enabled`.
    pub list_streams: bool,
}

/// Longest `ui.title`, in characters.
pub const MAX_UI_TITLE_CHARS: usize = 100;

impl UiConfig {
    /// `ui.title`: 1 to [`MAX_UI_TITLE_CHARS`] characters, none of them a control character
    /// (the pages escape it; this keeps it one readable line).
    fn validate(&self) -> Result<(), ConfigError> {
        let title = &self.title;
        let count = title.chars().count();
        if count == 0 || count > MAX_UI_TITLE_CHARS || title.chars().any(char::is_control) {
            return Err(invalid(
                "ui.title",
                format!("{title:?}"),
                format!("must be 1 to {MAX_UI_TITLE_CHARS} characters, without control characters"),
            ));
        }
        Ok(())
    }
}

impl Default for UiConfig {
    fn default() -> Self {
        Self { enabled: true, title: "ZenLive".to_owned(), list_streams: true }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `zenlive=debug,info`; `RUST_LOG` wins if set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".to_owned() }
    }
}

/// `auth.algorithm`: how tokens are signed, and the only signatures accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 (`HS256`), the default.
    #[default]
    Hs256,
    /// HMAC with SHA-384 (`HS384`).
    Hs384,
    /// HMAC with SHA-512 (`HS512`).
    Hs512,
    /// RSA (PKCS#1 v1.5) with SHA-256 (`RS256`).
    Rs256,
    /// RSA (PKCS#1 v1.5) with SHA-384 (`RS384`).
    Rs384,
    /// RSA (PKCS#1 v1.5) with SHA-512 (`RS512`).
    Rs512,
    /// ECDSA on P-256 with SHA-256 (`ES256`).
    Es256,
    /// ECDSA on P-384 with SHA-384 (`ES384`).
    Es384,
    /// Ed25519 (`EdDSA`).
    #[serde(rename = "EdDSA")]
    EdDsa,
}

impl JwtAlgorithm {
    /// Every value, in the order the documentation lists them.
    pub const ALL: [Self; 9] = [
        Self::Hs256,
        Self::Hs384,
        Self::Hs512,
        Self::Rs256,
        Self::Rs384,
        Self::Rs512,
        Self::Es256,
        Self::Es384,
        Self::EdDsa,
    ];

    /// The name as the configuration writes it (`HS256`, `EdDSA`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Hs384 => "HS384",
            Self::Hs512 => "HS512",
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::EdDsa => "EdDSA",
        }
    }
}

/// `hooks.on_failure`: the decision when a decider fails, panics or times out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Refuse (`deny`), the default.
    #[default]
    Deny,
    /// Let it through (`allow`).
    Allow,
}

impl OnFailure {
    /// Every value, in the order the documentation lists them.
    pub const ALL: [Self; 2] = [Self::Deny, Self::Allow];

    /// The value as the configuration writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Allow => "allow",
        }
    }
}

/// `chat.rooms_without_stream`: who may open the chat room of a stream that is not live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomsWithoutStream {
    /// A client with a valid token (`signed_in`), the default.
    #[default]
    SignedIn,
    /// Any client (`anyone`).
    Anyone,
    /// No client (`none`): such rooms exist only beside live streams, or when the
    /// application opens them.
    None,
}

impl RoomsWithoutStream {
    /// Every value, in the order the documentation lists them.
    pub const ALL: [Self; 3] = [Self::SignedIn, Self::Anyone, Self::None];

    /// The value as the configuration writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignedIn => "signed_in",
            Self::Anyone => "anyone",
            Self::None => "none",
        }
    }
}

/// `log.format`: how log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (`text`), the default.
    #[default]
    Text,
    /// One JSON object per line (`json`).
    Json,
}

impl LogFormat {
    /// Every value, in the order the documentation lists them.
    pub const ALL: [Self; 2] = [Self::Text, Self::Json];

    /// The value as the configuration writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|format| format.as_str() == text)
            .ok_or_else(|| format!("log format {text:?} is not \"text\" or \"json\""))
    }
}

/// `Display` as the configuration writes the value.
macro_rules! display_as_str {
    ($($name:ty),+) => {$(
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )+};
}
display_as_str!(
    JwtAlgorithm,
    OnFailure,
    RoomsWithoutStream,
    LogFormat,
    RecordingFormat,
    ChecksumMode
);

/// What a duration in the configuration looks like, for error messages.
const DURATION_FORMS: &str =
    "a duration such as \"30s\", \"500ms\" or \"2m\", or a number of seconds";

/// Parses a duration as the configuration takes it: `"30s"`, `"500ms"`, `"2m"`, `"1h 30m"`
/// (humantime's units), or a number of seconds (`"10"`, `"0.05"`). The error says what
/// was expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    match text.parse::<f64>() {
        Ok(seconds) => from_seconds(seconds),
        Err(_) => humantime::parse_duration(text).map_err(|_| format!("expected {DURATION_FORMS}")),
    }
}

/// `seconds` as a `Duration`; an error when negative, not a number or too large.
fn from_seconds(seconds: f64) -> Result<Duration, String> {
    if seconds < 0.0 {
        return Err("a duration cannot be negative".to_owned());
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("expected {DURATION_FORMS}"))
}

/// `value` as the configuration prints it, in a form [`parse_duration`] reads back
/// exactly: `"30s"`, `"50ms"`, `"1m 30s"`, `"24h"`, `"0s"`.
pub fn format_duration(value: Duration) -> String {
    if value.is_zero() {
        return "0s".to_owned();
    }
    let (secs, nanos) = (value.as_secs(), u64::from(value.subsec_nanos()));
    let parts = [
        (secs / 3600, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
        (nanos / 1_000_000, "ms"),
        (nanos / 1000 % 1000, "us"),
        (nanos % 1000, "ns"),
    ];
    let parts: Vec<String> =
        parts.iter().filter(|(n, _)| *n > 0).map(|(n, unit)| format!("{n}{unit}")).collect();
    parts.join(" ")
}

/// Serde for the configuration's `Duration` fields (`#[serde(with = "duration")]`): reads
/// what [`parse_duration`] reads, and TOML numbers as seconds; writes [`format_duration`].
mod duration {
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(super::DURATION_FORMS)
        }

        fn visit_u64<E: de::Error>(self, seconds: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(seconds))
        }

        fn visit_i64<E: de::Error>(self, seconds: i64) -> Result<Duration, E> {
            u64::try_from(seconds)
                .map(Duration::from_secs)
                .map_err(|_| E::custom("a duration cannot be negative"))
        }

        fn visit_f64<E: de::Error>(self, seconds: f64) -> Result<Duration, E> {
            super::from_seconds(seconds).map_err(E::custom)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            super::parse_duration(text).map_err(E::custom)
        }
    }
}

/// Keys that moved, as `(old, new)` `section.key` pairs. An old key (in the file, or its
/// `ZENLIVE_*` variable) still works, with a [`Deprecated`] warning; when the new key is
/// set too (in either place), the new key wins.
pub const DEPRECATED_KEYS: [(&str, &str); 2] =
    [("rtmp.max_viewer_lag", "play.max_viewer_lag"), ("rtmp.play_write_delay", "play.write_delay")];

/// A deprecated key that a configuration sets; its `Display` is the warning to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deprecated {
    /// The old key as it was set: `rtmp.max_viewer_lag`, or `ZENLIVE_RTMP_MAX_VIEWER_LAG`.
    pub old: String,
    /// The key that replaces it (`play.max_viewer_lag`).
    pub new: &'static str,
    /// The new key is set too, so the old key's value is ignored.
    pub ignored: bool,
}

impl std::fmt::Display for Deprecated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (old, new) = (&self.old, self.new);
        if self.ignored {
            write!(f, "{old} is deprecated and ignored: {new} is set too and wins; remove {old}")
        } else {
            let variable = env_name(new);
            write!(f, "{old} is deprecated: it still applies, but set {new} ({variable}) instead")
        }
    }
}

/// The environment variable that sets `section.key`.
fn env_name(key: &str) -> String {
    format!("ZENLIVE_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// Moves the deprecated keys `table` sets to their new places (unless a new key is set,
/// which wins), keeping `origins` (key → the variable or old key that set it) in step.
fn move_deprecated(
    table: &mut toml::Table,
    origins: &mut HashMap<String, String>,
) -> Vec<Deprecated> {
    let mut found = Vec::new();
    for (old, new) in DEPRECATED_KEYS {
        let (Some((old_section, old_key)), Some((new_section, new_key))) =
            (old.split_once('.'), new.split_once('.'))
        else {
            continue;
        };
        let value = table
            .get_mut(old_section)
            .and_then(toml::Value::as_table_mut)
            .and_then(|section| section.remove(old_key));
        let Some(value) = value else { continue };
        let spelled = origins.remove(old).unwrap_or_else(|| old.to_owned());
        let section =
            table.entry(new_section).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        // A `play` that is not a table is reported when the whole is deserialized.
        let ignored = match section.as_table_mut() {
            Some(section) if !section.contains_key(new_key) => {
                section.insert(new_key.to_owned(), value);
                origins.insert(new.to_owned(), spelled.clone());
                false
            }
            _ => true,
        };
        found.push(Deprecated { old: spelled, new, ignored });
    }
    found
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
        Some(directive) => Err(invalid(
            "log.level",
            format!("{level:?}"),
            format!(
                "{directive:?} is not a level or target=level (levels: {})",
                LOG_LEVELS.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

/// Shortest `cluster.secret` accepted.
pub const MIN_CLUSTER_SECRET: usize = 16;

/// URL schemes `cluster.redis_url` may have (those the Redis client takes).
const REDIS_SCHEMES: [&str; 7] =
    ["redis", "rediss", "valkey", "valkeys", "redis+unix", "valkey+unix", "unix"];

/// Keys whose values never appear in a message.
const SECRET_KEYS: [&str; 4] =
    ["auth.jwt_secret", "webhooks.secret", "cluster.secret", "cluster.redis_url"];

/// The error for `key = value` (`value` as the configuration writes it): `problem`.
fn invalid(
    key: &str,
    value: impl std::fmt::Display,
    problem: impl std::fmt::Display,
) -> ConfigError {
    ConfigError::Invalid(format!("{key} = {value}: {problem}"))
}

/// An error naming `key`, its value and its range unless `value` lies in `range`.
fn within<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    unit: &str,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    let (start, end) = (range.start(), range.end());
    Err(invalid(key, &value, format!("must be between {start} and {end} {unit}")))
}

/// [`within`] for durations, written as the configuration writes them.
fn duration_within(
    key: &str,
    value: Duration,
    range: std::ops::RangeInclusive<Duration>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    let (start, end) = (format_duration(*range.start()), format_duration(*range.end()));
    Err(invalid(
        key,
        format!("{:?}", format_duration(value)),
        format!("must be between {start} and {end}"),
    ))
}

/// One line for a value that does not deserialize: `origin: key = value: what is wrong`,
/// with the value as `table` has it (secrets redacted) and the origin when a variable or a
/// deprecated key set it. Errors about a whole section keep toml's wording.
fn describe(
    error: &toml::de::Error,
    table: &toml::Table,
    origins: &HashMap<String, String>,
) -> ConfigError {
    let text = error.to_string();
    // toml names the key on a line of its own: "in `section.key`".
    let key = text
        .trim_end()
        .lines()
        .skip(1)
        .last()
        .and_then(|line| line.strip_prefix("in `"))
        .and_then(|line| line.strip_suffix('`'));
    let value = key
        .and_then(|key| key.split_once('.'))
        .and_then(|(section, name)| table.get(section)?.get(name))
        .filter(|value| !value.is_table());
    match (key, value) {
        (Some(key), Some(value)) => {
            let origin = origins.get(key).map(|origin| format!("{origin}: ")).unwrap_or_default();
            // Serde's message may quote the value too; secrets are strings, so that is all
            // there is to say about one.
            let (shown, problem) = if SECRET_KEYS.contains(&key) {
                ("<redacted>".to_owned(), "must be a string".to_owned())
            } else {
                (value.to_string(), error.message().trim().to_owned())
            };
            ConfigError::Invalid(format!("{origin}{key} = {shown}: {problem}"))
        }
        _ => ConfigError::Invalid(text.trim().replace('\n', " ")),
    }
}

impl Config {
    /// Loads `path` (if given), then applies `ZENLIVE_*` variables from `env`, and logs a
    /// warning for each deprecated key it uses (see [`Config::load_reporting`]).
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (config, deprecated) = Self::load_reporting(path, env)?;
        for warning in &deprecated {
            tracing::warn!("{warning}");
        }
        Ok(config)
    }

    /// Like [`Config::load`], but hands back the deprecated keys the configuration uses
    /// instead of logging them: the binary logs them once its logger is up, and
    /// `zenlive check` prints them.
    pub fn load_reporting(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Self, Vec<Deprecated>), ConfigError> {
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
        let mut origins = apply_env(&mut table, env)?;
        let deprecated = move_deprecated(&mut table, &mut origins);
        let config: Config = toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| describe(&e, &table, &origins))?;
        config.validate().map_err(|error| match error {
            // Say which variable (or deprecated key) set the value, as for a bad type.
            ConfigError::Invalid(message) => {
                let origin =
                    origins.iter().find(|(key, _)| message.starts_with(&format!("{key} =")));
                match origin {
                    Some((_, origin)) => ConfigError::Invalid(format!("{origin}: {message}")),
                    None => ConfigError::Invalid(message),
                }
            }
            error => error,
        })?;
        Ok((config, deprecated))
    }

    /// Checks every value against its range and the combinations that cannot work, with
    /// an error naming the key, its value and what is allowed;
    /// [`Config::load`] and [`NodeBuilder::start`](crate::NodeBuilder::start) call it. The
    /// key files `[auth]` names are read where tokens are checked
    /// ([`Auth::new`](crate::auth::Auth::new)), which the binary's `check` runs too.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (ms, s) = (Duration::from_millis, Duration::from_secs);
        let zero = Duration::ZERO;
        let (hour, day) = (s(3600), s(86_400));
        for (key, value, range) in [
            ("node.shutdown_timeout", self.node.shutdown_timeout, zero..=day),
            ("rtmp.handshake_timeout", self.rtmp.handshake_timeout, ms(100)..=day),
            ("rtmp.idle_timeout", self.rtmp.idle_timeout, ms(100)..=day),
            ("rtmp.publish_read_delay", self.rtmp.publish_read_delay, zero..=s(1)),
            ("play.max_viewer_lag", self.play.max_viewer_lag, ms(100)..=day),
            // A player's queue (96 frames) holds about a second of 30 fps video and its
            // audio; a batch must fit in it with room to spare.
            ("play.write_delay", self.play.write_delay, zero..=ms(500)),
            ("hls.segment_duration", self.hls.segment_duration, ms(500)..=s(60)),
            ("hls.reconnect_grace", self.hls.reconnect_grace, zero..=day),
            ("hls.part_duration", self.hls.part_duration, ms(100)..=s(2)),
            ("hls.ll_segment_duration", self.hls.ll_segment_duration, ms(500)..=s(10)),
            ("recording.segment_duration", self.recording.segment_duration, s(1)..=hour),
            ("recording.max_download", self.recording.max_download, s(1)..=day),
            ("recording.delete_after", self.recording.delete_after, zero..=day * 36_500),
            ("auth.leeway", self.auth.leeway, zero..=hour),
            ("auth.session_ttl", self.auth.session_ttl, s(1)..=day),
            ("hooks.timeout", self.hooks.timeout, ms(1)..=day),
            ("webhooks.timeout", self.webhooks.timeout, ms(1)..=day),
            ("webhooks.retry_for", self.webhooks.retry_for, zero..=day * 7),
            ("cluster.relay_idle", self.cluster.relay_idle, ms(100)..=day),
            ("cluster.relay_grace", self.cluster.relay_grace, zero..=day),
            ("cluster.link_idle_timeout", self.cluster.link_idle_timeout, s(1)..=hour),
            ("webrtc.connect_timeout", self.webrtc.connect_timeout, s(1)..=s(300)),
            ("webrtc.idle_timeout", self.webrtc.idle_timeout, s(1)..=hour),
        ] {
            duration_within(key, value, range)?;
        }
        if self.hls.part_duration * 2 > self.hls.ll_segment_duration {
            return Err(ConfigError::Invalid(format!(
                "hls.part_duration ({:?}) must be at most half of hls.ll_segment_duration ({:?})",
                self.hls.part_duration, self.hls.ll_segment_duration
            )));
        }
        for (key, value) in
            [("auth.leeway", self.auth.leeway), ("auth.session_ttl", self.auth.session_ttl)]
        {
            if value.subsec_nanos() != 0 {
                let value = format!("{:?}", format_duration(value));
                return Err(invalid(key, value, "must be whole seconds (token times are)"));
            }
        }
        for (key, value, range, unit) in [
            ("node.workers", self.node.workers, 0..=1024, "threads (0: one per core)"),
            ("rtmp.max_connections", self.rtmp.max_connections, 1..=1_000_000, "connections"),
            (
                "rtmp.max_pending_per_address",
                self.rtmp.max_pending_per_address,
                0..=1_000_000,
                "connections (0: no cap)",
            ),
            ("metrics.max_stream_series", self.metrics.max_stream_series, 0..=1_000_000, "streams"),
            ("hls.window", self.hls.window, 2..=100, "segments"),
            ("webhooks.queue", self.webhooks.queue, 1..=10_000_000, "events"),
            ("chat.history", self.chat.history, 0..=10_000, "messages"),
            ("chat.max_length", self.chat.max_length, 1..=1_000_000, "characters"),
            ("chat.max_members", self.chat.max_members, 1..=10_000_000, "members"),
            ("chat.burst", self.chat.burst as usize, 1..=1_000_000, "messages"),
            ("chat.max_frame", self.chat.max_frame, 1..=64 << 20, "bytes"),
            ("chat.member_queue", self.chat.member_queue, 1..=1_000_000, "frames"),
            ("chat.presence_limit", self.chat.presence_limit, 0..=10_000_000, "members"),
            ("chat.max_rooms", self.chat.max_rooms, 0..=10_000_000, "rooms"),
            ("webrtc.max_sessions", self.webrtc.max_sessions, 1..=1_000_000, "sessions"),
            (
                "chat.max_rooms_per_address",
                self.chat.max_rooms_per_address,
                0..=1_000_000,
                "rooms (0: no cap)",
            ),
        ] {
            within(key, value, range, unit)?;
        }
        within("rtmp.max_partial_bytes", self.rtmp.max_partial_bytes, 1 << 20..=1 << 40, "bytes")?;
        within(
            "chat.per_second",
            self.chat.per_second,
            0.001..=1_000_000.0,
            "messages per second",
        )?;
        check_log_level(&self.log.level)?;
        self.webrtc.validate()?;
        self.ui.validate()?;
        self.validate_recording()?;
        if self.tls.cert.is_empty() != self.tls.key.is_empty() {
            return Err(ConfigError::Invalid(
                "tls.cert and tls.key go together: set both (PEM files) or neither".into(),
            ));
        }
        let http = |url: &str| url.starts_with("http://") || url.starts_with("https://");
        if let Some(url) = self.webhooks.urls.iter().find(|url| !http(url)) {
            return Err(ConfigError::Invalid(format!(
                "webhooks.urls: {url:?} must start with http:// or https://"
            )));
        }
        let callback = &self.webhooks.on_publish_url;
        if !callback.is_empty() && !http(callback) {
            return Err(invalid(
                "webhooks.on_publish_url",
                format!("{callback:?}"),
                "must start with http:// or https://",
            ));
        }
        if self.cluster.enabled {
            self.validate_cluster()?;
        }
        Ok(())
    }

    /// The `[recording]` path template and patterns, and `[storage]`.
    fn validate_recording(&self) -> Result<(), ConfigError> {
        let recording = &self.recording;
        if let Err(problem) = crate::recording::path::PathTemplate::parse(&recording.path) {
            return Err(invalid("recording.path", format!("{:?}", recording.path), problem));
        }
        for pattern in &recording.paths {
            if let Err(problem) = crate::recording::path::StreamPattern::parse(pattern) {
                return Err(invalid("recording.paths", format!("{pattern:?}"), problem));
            }
        }
        if self.storage.base_path.trim().is_empty() {
            return Err(invalid("storage.base_path", "\"\"", "must name a directory"));
        }
        if self.storage.kind == StorageKind::S3 {
            self.validate_s3()?;
        }
        Ok(())
    }

    /// `[storage.s3]` and what S3 storage rules out.
    fn validate_s3(&self) -> Result<(), ConfigError> {
        let s3 = &self.storage.s3;
        let local_only = "applies to local storage only; with storage.type = \"s3\" expire \
                          objects with a bucket lifecycle rule (local disk is bounded by \
                          storage.spool_max_bytes)";
        if !self.recording.delete_after.is_zero() {
            let value = format!("{:?}", format_duration(self.recording.delete_after));
            return Err(invalid("recording.delete_after", value, local_only));
        }
        if self.recording.max_local_bytes != 0 {
            return Err(invalid(
                "recording.max_local_bytes",
                self.recording.max_local_bytes,
                local_only,
            ));
        }
        if s3.bucket.trim().is_empty() {
            return Err(invalid(
                "storage.s3.bucket",
                "\"\"",
                "storage.type = \"s3\" needs a bucket",
            ));
        }
        if s3.region.trim().is_empty() {
            return Err(invalid(
                "storage.s3.region",
                "\"\"",
                "must name a region (any, such as us-east-1, for S3-compatible servers)",
            ));
        }
        let endpoint = &s3.endpoint;
        let http = endpoint.starts_with("http://") || endpoint.starts_with("https://");
        if !endpoint.is_empty() && !http {
            return Err(invalid(
                "storage.s3.endpoint",
                format!("{endpoint:?}"),
                "must start with http:// or https://",
            ));
        }
        if s3.prefix.starts_with('/') {
            return Err(invalid(
                "storage.s3.prefix",
                format!("{:?}", s3.prefix),
                "must not start with '/' (object keys do not)",
            ));
        }
        let (ms, s) = (Duration::from_millis, Duration::from_secs);
        duration_within("storage.s3.attempt_timeout", s3.attempt_timeout, ms(100)..=s(3600))?;
        duration_within(
            "storage.s3.operation_timeout",
            s3.operation_timeout,
            s3.attempt_timeout..=s(86_400),
        )?;
        duration_within("storage.s3.max_backoff", s3.max_backoff, ms(500)..=s(3600))?;
        // SigV4 presigned URLs live at most 7 days.
        duration_within("storage.s3.presign_expiry", s3.presign_expiry, s(1)..=s(604_800))?;
        // S3's limits: parts of 5 MiB to 5 GiB; one PutObject carries at most 5 GiB.
        within("storage.s3.part_size", s3.part_size, 5 << 20..=5 << 30, "bytes")?;
        within(
            "storage.s3.multipart_threshold",
            s3.multipart_threshold,
            5 << 20..=5 << 30,
            "bytes",
        )?;
        within("storage.s3.concurrency", s3.concurrency, 1..=256, "uploads")?;
        within(
            "storage.spool_max_bytes",
            self.storage.spool_max_bytes,
            1 << 20..=1 << 50,
            "bytes",
        )?;
        Ok(())
    }

    /// The `[cluster]` keys (and `node.id`) as cluster mode needs them.
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let cluster = &self.cluster;
        let scheme = cluster.redis_url.split_once("://").map(|(scheme, _)| scheme);
        if !scheme.is_some_and(|scheme| REDIS_SCHEMES.contains(&scheme)) {
            // The URL may hold a password: only its scheme is shown.
            return Err(ConfigError::Invalid(format!(
                "cluster.redis_url: a URL such as redis://127.0.0.1:6379/ is expected, with one \
                 of the schemes {}; got {} (the URL itself is not shown: it may hold a password)",
                REDIS_SCHEMES.join(", "),
                scheme.map_or_else(|| "no scheme".to_owned(), |scheme| format!("{scheme:?}")),
            )));
        }
        if cluster.advertise_host.is_empty() && cluster.addr.ip().is_unspecified() {
            return Err(ConfigError::Invalid(format!(
                "cluster.addr = \"{}\" listens on every address: set cluster.advertise_host to \
                 the address other nodes reach this one at",
                cluster.addr
            )));
        }
        if self.node.id.contains(['|', ':', ' ']) {
            return Err(invalid(
                "node.id",
                format!("{:?}", self.node.id),
                "may not contain '|', ':' or spaces in cluster mode",
            ));
        }
        if cluster.secret.len() < MIN_CLUSTER_SECRET {
            return Err(ConfigError::Invalid(format!(
                "cluster mode needs cluster.secret (ZENLIVE_CLUSTER_SECRET), at least \
                 {MIN_CLUSTER_SECRET} characters and the same on every node: without it anyone \
                 who reaches cluster.addr could pull every stream and post in every chat \
                 room. Make one with `openssl rand -hex 32`"
            )));
        }
        Ok(())
    }
}

/// Applies `ZENLIVE_SECTION_KEY=value` overrides. Each value takes the type of the key it
/// sets: a string key gets the text as it is (`ZENLIVE_NODE_ID=1` is the id "1"); numbers
/// and booleans are parsed; a duration is read as in the file (`30s`, `500ms`, `0.05`); a
/// list is a TOML array (`["a","b"]`) or comma-separated (`a,b`). A deprecated key's
/// variable sets the old key (see [`DEPRECATED_KEYS`]). A variable that names no section or
/// key is an error naming it. Returns which variable set each key (`section.key`).
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<HashMap<String, String>, ConfigError> {
    let defaults = toml::Table::try_from(Config::default())
        .map_err(|e| ConfigError::Invalid(format!("the defaults do not serialize: {e}")))?;
    let sections = || defaults.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
    let default_of = |key: &str| {
        let (section, name) = key.split_once('.')?;
        defaults.get(section)?.get(name)
    };
    let mut origins = HashMap::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("ZENLIVE_") else { continue };
        if rest == "CONFIG" {
            // The configuration file's path (`--config`), not a key.
            continue;
        }
        let rest = rest.to_ascii_lowercase();
        let (section, key) = rest.split_once('_').unwrap_or((rest.as_str(), ""));
        let Some(toml::Value::Table(known)) = defaults.get(section) else {
            return Err(ConfigError::Invalid(format!(
                "{name}: no configuration section [{section}] (sections: {}); variables are \
                 ZENLIVE_SECTION_KEY",
                sections()
            )));
        };
        // A key of a sub-table (`[storage.s3] bucket` is ZENLIVE_STORAGE_S3_BUCKET).
        let nested = known.iter().find_map(|(sub, value)| {
            let rest = key.strip_prefix(sub.as_str())?.strip_prefix('_')?;
            let default = value.as_table()?.get(rest)?;
            Some((sub.as_str(), rest, default))
        });
        let full = match nested {
            Some((sub, rest, _)) => format!("{section}.{sub}.{rest}"),
            None => format!("{section}.{key}"),
        };
        let moved = DEPRECATED_KEYS.iter().find(|(old, _)| *old == full);
        let Some(default) = nested
            .map(|(_, _, default)| default)
            .or_else(|| known.get(key).filter(|value| !value.is_table()))
            .or_else(|| moved.and_then(|(_, new)| default_of(new)))
        else {
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
        let (mut section_table, mut key): (&mut toml::Table, &str) = (section_table, key);
        if let Some((sub, rest, _)) = nested {
            let entry = section_table
                .entry(sub.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(sub_table) = entry else {
                return Err(ConfigError::Invalid(format!("[{section}.{sub}] must be a table")));
            };
            (section_table, key) = (sub_table, rest);
        }
        section_table.insert(key.to_owned(), parsed);
        origins.insert(full, name);
    }
    Ok(origins)
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
        assert_eq!(c.hls.segment_duration, Duration::from_secs(6));
        assert_eq!(c.play.write_delay, Duration::from_millis(100));
    }

    #[test]
    fn ui_keys_come_from_the_environment_and_are_checked() {
        let c = Config::load(
            None,
            env(&[
                ("ZENLIVE_UI_ENABLED", "false"),
                ("ZENLIVE_UI_TITLE", "Town <hall> TV"),
                ("ZENLIVE_UI_LIST_STREAMS", "false"),
            ]),
        )
        .expect("valid");
        assert!(!c.ui.enabled && !c.ui.list_streams);
        assert_eq!(c.ui.title, "Town <hall> TV");
        let long = "x".repeat(MAX_UI_TITLE_CHARS + 1);
        for bad in ["", "two\nlines", long.as_str()] {
            let err = Config::load(None, env(&[("ZENLIVE_UI_TITLE", bad)])).expect_err(bad);
            assert!(err.to_string().contains("ui.title"), "{err}");
        }
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
    fn recording_keys_come_from_the_environment_and_are_checked() {
        let c = Config::load(
            None,
            env(&[
                ("ZENLIVE_CONFIG", "/etc/zenlive.toml"),
                ("ZENLIVE_RECORDING_ENABLED", "true"),
                ("ZENLIVE_RECORDING_AUTO", "false"),
                ("ZENLIVE_RECORDING_FORMAT", "ts"),
                ("ZENLIVE_RECORDING_SEGMENT_DURATION", "4s"),
                ("ZENLIVE_RECORDING_PATHS", "live/*,shows/main"),
                ("ZENLIVE_RECORDING_PATH", "{key}/{start}.{ext}"),
                ("ZENLIVE_STORAGE_TYPE", "local"),
                ("ZENLIVE_STORAGE_BASE_PATH", "/tmp/rec"),
            ]),
        )
        .expect("valid");
        assert!(c.recording.enabled);
        assert!(!c.recording.auto);
        assert_eq!(c.recording.format, RecordingFormat::Ts);
        assert_eq!(c.recording.segment_duration, Duration::from_secs(4));
        assert_eq!(c.recording.paths, ["live/*", "shows/main"]);
        assert_eq!(
            (c.storage.kind, c.storage.base_path.as_str()),
            (StorageKind::Local, "/tmp/rec")
        );
        let defaults = Config::default();
        assert_eq!(defaults.recording.segment_duration, Duration::from_secs(10));
        assert!(!defaults.recording.enabled);
        assert!(defaults.recording.auto);
        for (var, value, says) in [
            ("ZENLIVE_RECORDING_FORMAT", "mkv", "recording.format"),
            ("ZENLIVE_RECORDING_SEGMENT_DURATION", "0.5", "between 1s and 1h"),
            ("ZENLIVE_RECORDING_PATH", "{app}/{when}.{ext}", "unknown placeholder {when}"),
            ("ZENLIVE_RECORDING_PATH", "../{key}.{ext}", "climb"),
            ("ZENLIVE_RECORDING_PATHS", "live", "app/key"),
            ("ZENLIVE_STORAGE_TYPE", "s4", "storage.type"),
        ] {
            let err = Config::load(None, env(&[(var, value)])).expect_err(value).to_string();
            assert!(err.contains(says) && err.contains(var), "{var}={value}: {err}");
        }
    }

    #[test]
    fn hls_storage_keys_come_from_the_file_and_the_environment() {
        let c = Config::load(None, env(&[])).expect("defaults");
        assert_eq!(c.hls.storage, HlsStorage::Files);
        assert_eq!(c.hls.spool_path(), std::env::temp_dir().join("zenlive-hls"));
        let c = Config::load(
            None,
            env(&[("ZENLIVE_HLS_STORAGE", "memory"), ("ZENLIVE_HLS_SPOOL_DIR", "/dev/shm/z")]),
        )
        .expect("env");
        assert_eq!(c.hls.storage, HlsStorage::Memory);
        assert_eq!(c.hls.spool_path(), std::path::PathBuf::from("/dev/shm/z"));
        let (c, _) =
            load_file("[hls]\nstorage = \"files\"\nspool_dir = \"/srv/hls\"\n", &[]).expect("file");
        assert_eq!((c.hls.storage, c.hls.spool_dir.as_str()), (HlsStorage::Files, "/srv/hls"));
        let err = Config::load(None, env(&[("ZENLIVE_HLS_STORAGE", "disk")])).expect_err("disk");
        assert!(err.to_string().contains("ZENLIVE_HLS_STORAGE"), "{err}");
    }

    #[test]
    fn s3_keys_come_from_the_environment_and_are_checked() {
        let base = [
            ("ZENLIVE_STORAGE_TYPE", "s3"),
            ("ZENLIVE_STORAGE_S3_BUCKET", "rec"),
            ("ZENLIVE_STORAGE_S3_ENDPOINT", "http://127.0.0.1:8333"),
            ("ZENLIVE_STORAGE_S3_FORCE_PATH_STYLE", "true"),
            ("ZENLIVE_STORAGE_S3_REQUEST_CHECKSUM_CALCULATION", "when_required"),
            ("ZENLIVE_STORAGE_S3_ATTEMPT_TIMEOUT", "5s"),
            ("ZENLIVE_STORAGE_SPOOL_MAX_BYTES", "1048576"),
        ];
        let c = Config::load(None, env(&base)).expect("valid");
        let s3 = &c.storage.s3;
        assert_eq!(c.storage.kind, StorageKind::S3);
        assert_eq!((s3.bucket.as_str(), s3.endpoint.as_str()), ("rec", "http://127.0.0.1:8333"));
        assert!(s3.force_path_style);
        assert_eq!(s3.request_checksum_calculation, ChecksumMode::WhenRequired);
        assert_eq!(s3.attempt_timeout, Duration::from_secs(5));
        assert_eq!(c.storage.spool_max_bytes, 1 << 20);
        for (variable, value, expected) in [
            ("ZENLIVE_STORAGE_S3_BUCKET", "", "storage.s3.bucket = \"\": storage.type = \"s3\" needs a bucket"),
            ("ZENLIVE_STORAGE_S3_ENDPOINT", "127.0.0.1:8333", "storage.s3.endpoint"),
            ("ZENLIVE_STORAGE_S3_REQUEST_CHECKSUM_CALCULATION", "never", "when_supported"),
            ("ZENLIVE_STORAGE_S3_PART_SIZE", "1000", "ZENLIVE_STORAGE_S3_PART_SIZE: storage.s3.part_size = 1000: must be between 5242880 and 5368709120 bytes"),
            ("ZENLIVE_STORAGE_S3_ATTEMPT_TIMEOUT", "10m", "storage.s3.operation_timeout"),
            ("ZENLIVE_STORAGE_S3_CONCURRENCY", "0", "storage.s3.concurrency = 0"),
            ("ZENLIVE_STORAGE_S3_BUCKETS", "x", "ZENLIVE_STORAGE_S3_BUCKETS"),
            ("ZENLIVE_RECORDING_DELETE_AFTER", "7d", "recording.delete_after"),
            ("ZENLIVE_RECORDING_MAX_LOCAL_BYTES", "100", "bucket lifecycle rule"),
        ] {
            let mut vars = env(&base);
            vars.push((variable.to_owned(), value.to_owned()));
            let err = Config::load(None, vars).expect_err(variable).to_string();
            assert!(err.contains(expected), "{variable}={value}: {err}");
        }
        let local = Config::load(None, env(&[("ZENLIVE_RECORDING_DELETE_AFTER", "7d")]))
            .expect("retention with local storage");
        assert_eq!(local.recording.delete_after, Duration::from_secs(7 * 86_400));
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
        assert_eq!(c.hls.segment_duration, Duration::from_secs(2));
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
        assert_eq!(c.hls.segment_duration, Duration::from_secs(2));
        assert_eq!(c.chat.blocked_words, ["spam", "scam"]);
        assert_eq!(c.webhooks.urls, ["http://a/", "http://b/"]);
        let err = Config::load(None, env(&[("ZENLIVE_HSL_WINDOW", "3")])).expect_err("a typo");
        assert!(err.to_string().contains("ZENLIVE_HSL_WINDOW"), "{err}");
        let err = Config::load(None, env(&[("ZENLIVE_LOG_LEVEL", "verbose")])).expect_err("level");
        assert!(err.to_string().contains("verbose") && err.to_string().contains("info"), "{err}");
    }

    #[test]
    fn the_webrtc_section_has_defaults_env_overrides_and_checks() {
        let c = Config::default();
        assert!(c.webrtc.enabled);
        assert_eq!(c.webrtc.udp_addr.to_string(), "0.0.0.0:8189");
        let c = Config::load(
            None,
            env(&[
                ("ZENLIVE_WEBRTC_UDP_ADDR", "127.0.0.1:9000"),
                ("ZENLIVE_WEBRTC_PUBLIC_ADDRS", "203.0.113.7, 198.51.100.1:40000"),
                ("ZENLIVE_WEBRTC_ICE_SERVERS", "stun:stun.example.net:3478"),
                ("ZENLIVE_WEBRTC_TCP_ADDR", "127.0.0.1:9001"),
                ("ZENLIVE_WEBRTC_UDP_CANDIDATES", "false"),
                ("ZENLIVE_WEBRTC_UDP_SEND", "sendto"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.webrtc.tcp_socket_addr().expect("valid"), "127.0.0.1:9001".parse().ok());
        assert!(!c.webrtc.udp_candidates);
        assert_eq!(c.webrtc.udp_send, UdpSend::Sendto);
        assert_eq!(Config::default().webrtc.udp_send, UdpSend::Gso);
        assert!(Config::load(None, env(&[("ZENLIVE_WEBRTC_UDP_SEND", "carrier-pigeon")])).is_err());
        assert_eq!(Config::default().webrtc.tcp_socket_addr().expect("valid"), None, "off");
        let public = c.webrtc.public_socket_addrs().expect("valid addresses");
        let public: Vec<String> = public.iter().map(ToString::to_string).collect();
        assert_eq!(public, ["203.0.113.7:9000", "198.51.100.1:40000"]);
        assert_eq!(c.webrtc.ice_servers, ["stun:stun.example.net:3478"]);
        for (k, v, expected) in [
            ("ZENLIVE_WEBRTC_PUBLIC_ADDRS", "example.net", "webrtc.public_addrs"),
            ("ZENLIVE_WEBRTC_ICE_SERVERS", "http://stun.example.net", "webrtc.ice_servers"),
            ("ZENLIVE_WEBRTC_MAX_SESSIONS", "0", "webrtc.max_sessions"),
            ("ZENLIVE_WEBRTC_CONNECT_TIMEOUT", "0", "webrtc.connect_timeout"),
            ("ZENLIVE_WEBRTC_TCP_ADDR", "no port", "webrtc.tcp_addr"),
            ("ZENLIVE_WEBRTC_UDP_CANDIDATES", "false", "webrtc.udp_candidates"),
        ] {
            let err = Config::load(None, env(&[(k, v)])).expect_err(k);
            assert!(err.to_string().contains(expected), "{k}: {err}");
        }
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
            ("ZENLIVE_PLAY_WRITE_DELAY", "-0.1"),
            ("ZENLIVE_PLAY_WRITE_DELAY", "0.6"),
            ("ZENLIVE_RTMP_PLAY_WRITE_DELAY", "0.6"),
            ("ZENLIVE_HLS_SEGMENT_DURATION", "soon"),
            ("ZENLIVE_AUTH_LEEWAY", "1500ms"),
            ("ZENLIVE_CHAT_BURST", "0"),
            ("ZENLIVE_NODE_WORKERS", "100000"),
            ("ZENLIVE_HOOKS_ON_FAILURE", "maybe"),
        ] {
            let err = Config::load(None, env(&[(k, v)])).expect_err("must fail");
            assert!(matches!(err, ConfigError::Invalid(_)), "{k}={v}: {err}");
        }
        let err =
            Config::load(None, env(&[("ZENLIVE_PLAY_WRITE_DELAY", "0.6")])).expect_err("must fail");
        assert_eq!(
            err.to_string(),
            "invalid configuration: ZENLIVE_PLAY_WRITE_DELAY: play.write_delay = \"600ms\": must \
             be between 0s and 500ms"
        );
        let err = Config::load(None, env(&[("ZENLIVE_RTMP_IDLE_TIMEOUT", "0s")])).expect_err("0");
        assert_eq!(
            err.to_string(),
            "invalid configuration: ZENLIVE_RTMP_IDLE_TIMEOUT: rtmp.idle_timeout = \"0s\": must \
             be between 100ms and 24h"
        );
        let err = load_file("[rtmp]\nidle_timeout = 0\n", &[]).expect_err("0");
        assert_eq!(
            err.to_string(),
            "invalid configuration: rtmp.idle_timeout = \"0s\": must be between 100ms and 24h"
        );
        let err = Config::load(None, env(&[("ZENLIVE_CHAT_BURST", "0")])).expect_err("burst");
        assert_eq!(
            err.to_string(),
            "invalid configuration: ZENLIVE_CHAT_BURST: chat.burst = 0: must be between 1 and \
             1000000 messages"
        );
    }

    /// Loads `text` as the configuration file, with `vars` as the environment.
    fn load_file(
        text: &str,
        vars: &[(&str, &str)],
    ) -> Result<(Config, Vec<Deprecated>), ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("zenlive.toml");
        std::fs::write(&path, text).expect("write");
        Config::load_reporting(Some(&path), env(vars))
    }

    #[test]
    fn durations_take_every_form_from_the_file() {
        let (ms, s) = (Duration::from_millis, Duration::from_secs);
        for (written, expected) in [
            ("\"30s\"", s(30)),
            ("\"500ms\"", ms(500)),
            ("\"2m\"", s(120)),
            ("\"1m 30s\"", s(90)),
            ("\"1h\"", s(3600)),
            ("45", s(45)),
            ("0.05", ms(50)),
            ("0.3", ms(300)),
            ("12.5", ms(12_500)),
            ("\"20\"", s(20)),
            ("\"0.25\"", ms(250)),
        ] {
            let (c, deprecated) =
                load_file(&format!("[hls]\nreconnect_grace = {written}\n"), &[]).expect(written);
            assert_eq!(c.hls.reconnect_grace, expected, "{written}");
            assert!(deprecated.is_empty());
        }
    }

    #[test]
    fn durations_take_every_form_from_the_environment() {
        let (ms, s) = (Duration::from_millis, Duration::from_secs);
        for (written, expected) in [
            ("30s", s(30)),
            ("500ms", ms(500)),
            ("2m", s(120)),
            ("45", s(45)),
            ("0.05", ms(50)),
            ("2.0", s(2)),
            (" 10s ", s(10)),
        ] {
            let c =
                Config::load(None, env(&[("ZENLIVE_WEBHOOKS_RETRY_FOR", written)])).expect(written);
            assert_eq!(c.webhooks.retry_for, expected, "{written:?}");
        }
        // Whole seconds where tokens need them.
        let c = Config::load(None, env(&[("ZENLIVE_AUTH_SESSION_TTL", "10m")])).expect("ttl");
        assert_eq!(c.auth.session_ttl, s(600));
    }

    #[test]
    fn durations_print_in_the_human_form_and_read_back() {
        let (ms, s) = (Duration::from_millis, Duration::from_secs);
        for (value, printed) in [
            (Duration::ZERO, "0s"),
            (ms(50), "50ms"),
            (s(30), "30s"),
            (s(90), "1m 30s"),
            (s(86_400), "24h"),
            (Duration::new(1, 1_001), "1s 1us 1ns"),
        ] {
            assert_eq!(format_duration(value), printed);
            assert_eq!(parse_duration(printed), Ok(value), "{printed}");
        }
        let table = toml::Table::try_from(Config::default()).expect("serializable");
        let rtmp = &table["rtmp"];
        assert_eq!(rtmp["idle_timeout"].as_str(), Some("30s"));
        assert_eq!(rtmp["publish_read_delay"].as_str(), Some("50ms"));
        assert_eq!(table["play"]["write_delay"].as_str(), Some("100ms"));
        assert_eq!(table["log"]["format"].as_str(), Some("text"));
        assert_eq!(table["auth"]["algorithm"].as_str(), Some("HS256"));
        // What is printed loads back as it was.
        let printed = toml::to_string(&Config::default()).expect("printable");
        let back: Config = toml::from_str(&printed).expect("loads back");
        assert_eq!(back, Config::default());
    }

    #[test]
    fn a_bad_duration_names_the_key_the_value_and_the_forms() {
        let err = load_file("[hls]\nsegment_duration = \"soon\"\n", &[]).expect_err("bad");
        assert_eq!(
            err.to_string(),
            "invalid configuration: hls.segment_duration = \"soon\": expected a duration such \
             as \"30s\", \"500ms\" or \"2m\", or a number of seconds"
        );
        let err = Config::load(None, env(&[("ZENLIVE_RTMP_IDLE_TIMEOUT", "-5")])).expect_err("<0");
        assert_eq!(
            err.to_string(),
            "invalid configuration: ZENLIVE_RTMP_IDLE_TIMEOUT: rtmp.idle_timeout = \"-5\": a \
             duration cannot be negative"
        );
        let err = load_file("[hooks]\ntimeout = -1\n", &[]).expect_err("negative");
        assert!(err.to_string().contains("hooks.timeout = -1: a duration cannot be negative"));
        let err = load_file("[hooks]\ntimeout = true\n", &[]).expect_err("a boolean");
        assert!(err.to_string().contains("hooks.timeout = true: invalid type"), "{err}");
        let err = load_file("[auth]\nleeway = \"1500ms\"\n", &[]).expect_err("fraction");
        assert_eq!(
            err.to_string(),
            "invalid configuration: auth.leeway = \"1s 500ms\": must be whole seconds (token \
             times are)"
        );
    }

    #[test]
    fn enums_keep_their_spellings_and_a_bad_value_names_the_allowed_ones() {
        fn printed<T: Serialize>(value: T) -> String {
            match toml::Value::try_from(value) {
                Ok(toml::Value::String(text)) => text,
                other => panic!("an enum prints as a string, not {other:?}"),
            }
        }
        fn parsed<T: serde::de::DeserializeOwned>(text: &str) -> T {
            toml::Value::String(text.to_owned()).try_into().expect("parses")
        }
        for value in JwtAlgorithm::ALL {
            assert_eq!(printed(value), value.as_str());
            assert_eq!(parsed::<JwtAlgorithm>(value.as_str()), value);
        }
        for value in OnFailure::ALL {
            assert_eq!(printed(value), value.as_str());
        }
        for value in RoomsWithoutStream::ALL {
            assert_eq!(printed(value), value.as_str());
        }
        for value in LogFormat::ALL {
            assert_eq!(printed(value), value.as_str());
            assert_eq!(value.as_str().parse::<LogFormat>(), Ok(value));
        }
        let (c, _) = load_file(
            "[hooks]\non_failure = \"allow\"\n[chat]\nrooms_without_stream = \"none\"\n\
             [log]\nformat = \"json\"\n",
            &[],
        )
        .expect("valid");
        assert_eq!(c.hooks.on_failure, OnFailure::Allow);
        assert_eq!(c.chat.rooms_without_stream, RoomsWithoutStream::None);
        assert_eq!(c.log.format, LogFormat::Json);

        let err = load_file("[hooks]\non_failure = \"maybe\"\n", &[]).expect_err("bad");
        assert_eq!(
            err.to_string(),
            "invalid configuration: hooks.on_failure = \"maybe\": unknown variant `maybe`, \
             expected `deny` or `allow`"
        );
        let err =
            Config::load(None, env(&[("ZENLIVE_AUTH_ALGORITHM", "PS256")])).expect_err("PS256");
        let text = err.to_string();
        assert!(
            text.starts_with(
                "invalid configuration: ZENLIVE_AUTH_ALGORITHM: auth.algorithm = \"PS256\""
            ),
            "{text}"
        );
        for allowed in JwtAlgorithm::ALL {
            assert!(text.contains(&format!("`{allowed}`")), "{text}");
        }
        let err = Config::load(None, env(&[("ZENLIVE_CHAT_ROOMS_WITHOUT_STREAM", "everyone")]))
            .expect_err("everyone");
        assert!(err.to_string().contains("`signed_in`, `anyone`, `none`"), "{err}");
        let err = Config::load(None, env(&[("ZENLIVE_LOG_FORMAT", "xml")])).expect_err("xml");
        assert!(err.to_string().contains("`text` or `json`"), "{err}");
    }

    #[test]
    fn the_deprecated_play_keys_still_work_with_a_warning() {
        let (ms, s) = (Duration::from_millis, Duration::from_secs);
        let (c, deprecated) =
            load_file("[rtmp]\nmax_viewer_lag = 4\nplay_write_delay = \"20ms\"\n", &[])
                .expect("valid");
        assert_eq!(c.play.max_viewer_lag, s(4));
        assert_eq!(c.play.write_delay, ms(20));
        assert_eq!(
            deprecated.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "rtmp.max_viewer_lag is deprecated: it still applies, but set \
                 play.max_viewer_lag (ZENLIVE_PLAY_MAX_VIEWER_LAG) instead",
                "rtmp.play_write_delay is deprecated: it still applies, but set \
                 play.write_delay (ZENLIVE_PLAY_WRITE_DELAY) instead",
            ]
        );
        // The old variables too; the warning names the variable.
        let (c, deprecated) =
            load_file("", &[("ZENLIVE_RTMP_PLAY_WRITE_DELAY", "0")]).expect("valid");
        assert_eq!(c.play.write_delay, Duration::ZERO);
        assert_eq!(
            deprecated,
            [Deprecated {
                old: "ZENLIVE_RTMP_PLAY_WRITE_DELAY".into(),
                new: "play.write_delay",
                ignored: false
            }]
        );
        // An old key's bad value is reported under the new key, saying where it came from.
        let err = load_file("[rtmp]\nmax_viewer_lag = \"long\"\n", &[]).expect_err("bad");
        assert!(
            err.to_string().contains("rtmp.max_viewer_lag: play.max_viewer_lag = \"long\""),
            "{err}"
        );
        // Out of range under its new name.
        let err = load_file("[rtmp]\nplay_write_delay = 2\n", &[]).expect_err("too long");
        assert!(
            err.to_string().contains("rtmp.play_write_delay: play.write_delay = \"2s\""),
            "{err}"
        );
        // Nothing deprecated, nothing reported.
        let (_, deprecated) = load_file("[play]\nwrite_delay = \"50ms\"\n", &[]).expect("ok");
        assert!(deprecated.is_empty());
    }

    #[test]
    fn a_new_play_key_wins_over_its_old_one() {
        let (ms, s) = (Duration::from_millis, Duration::from_secs);
        let file = "[rtmp]\nmax_viewer_lag = 4\n[play]\nmax_viewer_lag = \"7s\"\n";
        let (c, deprecated) = load_file(file, &[]).expect("valid");
        assert_eq!(c.play.max_viewer_lag, s(7));
        assert_eq!(
            deprecated.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["rtmp.max_viewer_lag is deprecated and ignored: play.max_viewer_lag is set too \
                 and wins; remove rtmp.max_viewer_lag"]
        );
        // Whichever place each is set in: an old variable loses to a new key in the file, an
        // old key in the file loses to a new variable.
        let (c, deprecated) = load_file(
            "[play]\nwrite_delay = \"30ms\"\n[rtmp]\nmax_viewer_lag = 4\n",
            &[("ZENLIVE_RTMP_PLAY_WRITE_DELAY", "0.2"), ("ZENLIVE_PLAY_MAX_VIEWER_LAG", "9")],
        )
        .expect("valid");
        assert_eq!(c.play.write_delay, ms(30));
        assert_eq!(c.play.max_viewer_lag, s(9));
        assert!(deprecated.iter().all(|d| d.ignored), "{deprecated:?}");
        assert_eq!(deprecated.len(), 2);
        // An ignored old value is not even checked.
        let (c, _) =
            load_file("[rtmp]\nplay_write_delay = \"never\"\n[play]\nwrite_delay = 0\n", &[])
                .expect("the old value is ignored");
        assert_eq!(c.play.write_delay, Duration::ZERO);
    }

    #[test]
    fn secrets_are_not_shown_in_errors() {
        let err = load_file("[cluster]\nsecret = 12345678901234567\n", &[]).expect_err("a number");
        assert!(err.to_string().contains("cluster.secret = <redacted>"), "{err}");
        assert!(!err.to_string().contains("1234567890"), "{err}");
        let err = Config::load(
            None,
            env(&[
                ("ZENLIVE_CLUSTER_ENABLED", "true"),
                ("ZENLIVE_CLUSTER_ADVERTISE_HOST", "10.0.0.1"),
                ("ZENLIVE_CLUSTER_SECRET", "12345678901234567890"),
                ("ZENLIVE_CLUSTER_REDIS_URL", "http://user:hunter2@redis/"),
            ]),
        )
        .expect_err("not a Redis URL");
        assert!(
            err.to_string().contains("cluster.redis_url") && err.to_string().contains("\"http\"")
        );
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
