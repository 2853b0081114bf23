//! The `zenlive` binary as a real process on loopback: started with flags and environment,
//! its addresses read from the banner, its log in a file, killed on drop.

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::line_starting;

/// One `zenlive` process, killed on drop.
pub struct ZenliveProcess {
    pub child: Child,
    pub id: String,
    pub rtmp: String,
    pub http: String,
    pub metrics: String,
    /// Where other nodes connect (cluster mode only).
    pub cluster: String,
    /// HTTPS and RTMPS (`host:port`), when `ZENLIVE_TLS_CERT` is set.
    pub https: String,
    pub rtmps: String,
    pub log: PathBuf,
}

/// The URL's `host:port` after `scheme://`.
pub fn host_port(line: &str, scheme: &str) -> String {
    let start = line.find(scheme).expect("a URL") + scheme.len();
    line[start..].split(['/', ' ']).next().expect("host:port").to_owned()
}

/// Where the processes' logs go.
pub fn log_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("process-logs");
    std::fs::create_dir_all(&dir).expect("log dir");
    dir
}

impl ZenliveProcess {
    /// Starts `zenlive` with `args` and `env` on free loopback ports, logging at debug to
    /// `{name}.log`; waits for its banner.
    pub async fn start(name: &str, id: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let log = log_dir().join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_zenlive"));
        command
            .args(args)
            .args(["--rtmp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .env("ZENLIVE_WEBRTC_UDP_ADDR", "127.0.0.1:0")
            .env("ZENLIVE_HLS_SEGMENT_DURATION", "1")
            .env("ZENLIVE_NODE_WORKERS", "2")
            .env("ZENLIVE_LOG_LEVEL", "zenlive=debug,info")
            .env("NO_COLOR", "1");
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("start zenlive");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let rtmp = host_port(&line_starting(&mut lines, "Play RTMP:").await, "rtmp://");
        let http = host_port(&line_starting(&mut lines, "HLS:").await, "http://");
        let (mut https, mut rtmps) = (String::new(), String::new());
        if env.iter().any(|(key, _)| *key == "ZENLIVE_TLS_CERT") {
            rtmps = host_port(&line_starting(&mut lines, "RTMPS:").await, "rtmps://");
            https = host_port(&line_starting(&mut lines, "HTTPS:").await, "https://");
        }
        let metrics = host_port(&line_starting(&mut lines, "Metrics:").await, "http://");
        let mut cluster = String::new();
        if args.contains(&"--cluster-redis") {
            let banner = line_starting(&mut lines, "Cluster:").await;
            cluster = banner
                .split(" on ")
                .nth(1)
                .and_then(|rest| rest.split(',').next())
                .expect("cluster address in the banner")
                .to_owned();
        }
        // Keep reading stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, id: id.to_owned(), rtmp, http, https, rtmps, metrics, cluster, log }
    }

    pub fn pid(&self) -> String {
        self.child.id().expect("running").to_string()
    }

    pub fn signal(&self, signal: &str) {
        let status =
            std::process::Command::new("kill").args([signal, &self.pid()]).status().expect("kill");
        assert!(status.success(), "kill {signal} {}", self.id);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process's resident memory in bytes.
    pub fn rss(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc status");
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .expect("VmRSS");
        kib * 1024
    }

    /// `GET` a path on the metrics port (read-only API, no token), as JSON.
    pub async fn api(&self, path: &str) -> Option<Value> {
        let url = format!("http://{}{path}", self.metrics);
        let response = reqwest::get(url).await.ok()?;
        response.status().is_success().then_some(())?;
        response.json().await.ok()
    }

    pub async fn metrics_text(&self) -> String {
        let url = format!("http://{}/metrics", self.metrics);
        reqwest::get(url).await.expect("metrics").text().await.expect("text")
    }

    /// The node ids the node's `/api/v1/nodes` lists.
    pub async fn node_ids(&self) -> Vec<String> {
        let Some(body) = self.api("/api/v1/nodes").await else { return Vec::new() };
        body["nodes"]
            .as_array()
            .map(|nodes| nodes.iter().filter_map(|n| n["id"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    /// Whether the node serves `name` as a stream of its own or relayed.
    pub async fn has_stream(&self, name: &str) -> bool {
        let Some(body) = self.api("/api/v1/streams").await else { return false };
        body["streams"].as_array().is_some_and(|s| s.iter().any(|s| s["name"] == name))
    }

    pub fn rtmp_url(&self, stream: &str) -> String {
        format!("rtmp://{}/{stream}", self.rtmp)
    }
}

/// The value of metric `name` on `node` (its samples summed), NaN when absent.
pub async fn metric(node: &ZenliveProcess, name: &str) -> f64 {
    super::sample(&node.metrics_text().await, name, &[]).unwrap_or(f64::NAN)
}

/// Waits (polling the metrics) until `cond` holds of `name`'s value.
pub async fn wait_metric(
    node: &ZenliveProcess,
    name: &str,
    limit: std::time::Duration,
    cond: impl Fn(f64) -> bool,
) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let value = metric(node, name).await;
        if cond(value) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting on {name} (now {value})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
