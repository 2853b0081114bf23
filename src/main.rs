//! The `zenlive` node binary: parse the command line, load the configuration, start a node,
//! and shut it down cleanly on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use zenlive::auth::{unix_now, Auth, Claims, Role};
use zenlive::{Config, NodeBuilder};

/// mimalloc instead of the system allocator: each frame's payload is allocated on the
/// publisher's thread and freed on whichever thread lets the last copy go (a viewer's, or
/// the GOP cache's), a pattern glibc's malloc serves poorly (see ARCHITECTURE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A live-streaming node: RTMP in; HLS, RTMP and HTTP-FLV out.
///
/// Every configuration key `section.key` can also be set as the environment variable
/// ZENLIVE_SECTION_KEY (for example ZENLIVE_HLS_SEGMENT_DURATION=2). Precedence: flags, then
/// environment, then the file, then built-in defaults. See zenlive.example.toml.
#[derive(Debug, Parser)]
#[command(name = "zenlive", version)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// RTMP listen address [default: 0.0.0.0:1935].
    #[arg(long)]
    rtmp_addr: Option<SocketAddr>,
    /// HTTP listen address (HLS, HTTP-FLV) [default: 0.0.0.0:8080].
    #[arg(long)]
    http_addr: Option<SocketAddr>,
    /// Metrics and health listen address [default: 0.0.0.0:9090].
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Log format: text or json.
    #[arg(long)]
    log_format: Option<String>,
    /// This node's id (node.id) [default: random].
    #[arg(long)]
    node_id: Option<String>,
    /// Join a cluster through the Redis at this URL (sets cluster.enabled and
    /// cluster.redis_url), e.g. redis://127.0.0.1:6379/.
    #[arg(long)]
    cluster_redis: Option<String>,
    /// Where to listen for other cluster nodes [default: 127.0.0.1:7946].
    #[arg(long)]
    cluster_addr: Option<SocketAddr>,
    /// The host other nodes reach this one at (cluster.advertise_host).
    #[arg(long)]
    advertise_host: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print a token signed with the configured key (auth.jwt_secret, or auth.private_key
    /// for RS256/ES256/EdDSA), e.g. `zenlive token --sub alice --role publisher --stream
    /// live/alice --ttl 1h`.
    Token(TokenArgs),
    /// Drain a running node (it uses this configuration's key to sign an admin token): no
    /// new publishers or chat members, chat rooms move to other nodes, `/readyz` answers
    /// 503, live streams continue until they end. `--resume` undoes it.
    Drain(DrainArgs),
}

#[derive(Debug, clap::Args)]
struct DrainArgs {
    /// The node's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Take publishers and chat members again.
    #[arg(long)]
    resume: bool,
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// The user id (`sub`).
    #[arg(long)]
    sub: String,
    /// A role: admin, publisher, viewer or moderator (repeat for several).
    #[arg(long = "role", required = true)]
    roles: Vec<String>,
    /// The streams the token is good for: `live/alice`, `live/*`; all when omitted.
    #[arg(long)]
    stream: Option<String>,
    /// A display name.
    #[arg(long)]
    name: Option<String>,
    /// How long the token is valid: `90s`, `30m`, `1h`, `7d`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: std::time::Duration,
}

/// Mints and prints a token; an error when no signing key is configured.
fn print_token(config: &Config, args: TokenArgs) -> anyhow::Result<()> {
    let auth = Auth::new(&config.auth).context("auth configuration")?;
    anyhow::ensure!(
        auth.configured(),
        "no key configured: set auth.jwt_secret (ZENLIVE_AUTH_JWT_SECRET) or auth.public_key and auth.private_key"
    );
    let roles = args
        .roles
        .iter()
        .map(|r| Role::parse(r).with_context(|| format!("unknown role {r:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let now = unix_now();
    let claims = Claims {
        sub: args.sub,
        name: args.name,
        roles,
        stream: args.stream,
        exp: now.saturating_add(args.ttl.as_secs()),
        nbf: None,
        iat: Some(now),
        iss: (!config.auth.issuer.is_empty()).then(|| config.auth.issuer.as_str().into()),
        aud: (!config.auth.audience.is_empty()).then(|| config.auth.audience.as_str().into()),
    };
    println!("{}", auth.mint(&claims).map_err(anyhow::Error::msg)?);
    Ok(())
}

/// Asks the node at `args.url` to drain (or resume) through its admin API.
async fn drain(config: &Config, args: DrainArgs) -> anyhow::Result<()> {
    let auth = Auth::new(&config.auth).context("auth configuration")?;
    anyhow::ensure!(
        auth.configured(),
        "the admin API needs auth: set auth.jwt_secret (ZENLIVE_AUTH_JWT_SECRET) as on the node"
    );
    let now = unix_now();
    let claims = Claims {
        sub: "zenlive-drain".to_owned(),
        name: None,
        roles: vec![Role::Admin],
        stream: None,
        exp: now + 60,
        nbf: None,
        iat: Some(now),
        iss: (!config.auth.issuer.is_empty()).then(|| config.auth.issuer.as_str().into()),
        aud: (!config.auth.audience.is_empty()).then(|| config.auth.audience.as_str().into()),
    };
    let token = auth.mint(&claims).map_err(anyhow::Error::msg)?;
    let action = if args.resume { "resume" } else { "drain" };
    let url = format!("{}/api/v1/node/{action}", args.url.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "{url}: {status}: {body}");
    println!("{body}");
    Ok(())
}

fn init_logging(config: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    // Logs go to stderr; stdout carries only the start-up banner with the URLs.
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn url_host(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config =
        Config::load(cli.config.as_deref(), std::env::vars()).context("loading configuration")?;
    if let Some(addr) = cli.rtmp_addr {
        config.rtmp.addr = addr;
    }
    if let Some(addr) = cli.http_addr {
        config.http.addr = addr;
    }
    if let Some(addr) = cli.metrics_addr {
        config.metrics.addr = addr;
    }
    if let Some(id) = cli.node_id {
        config.node.id = id;
    }
    if let Some(url) = cli.cluster_redis {
        config.cluster.enabled = true;
        config.cluster.redis_url = url;
    }
    if let Some(addr) = cli.cluster_addr {
        config.cluster.addr = addr;
    }
    if let Some(host) = cli.advertise_host {
        config.cluster.advertise_host = host;
    }
    if let Some(format) = cli.log_format {
        anyhow::ensure!(
            matches!(format.as_str(), "text" | "json"),
            "--log-format must be text or json"
        );
        config.log.format = format;
    }
    match cli.command {
        Some(Command::Token(args)) => return print_token(&config, args),
        Some(Command::Drain(args)) => return drain(&config, args).await,
        None => {}
    }
    init_logging(&config);

    let node = NodeBuilder::new(config).start().await.context("starting the node")?;
    tracing::info!(node = %node.id(), "zenlive {} started", env!("CARGO_PKG_VERSION"));
    let http = url_host(node.http_addr());
    if let Some(rtmp) = node.rtmp_addr() {
        let rtmp = url_host(rtmp);
        println!("Publish:   ffmpeg -re -i input.mp4 -c copy -f flv rtmp://{rtmp}/live/test");
        println!("           (OBS: server rtmp://{rtmp}/live, stream key test)");
        println!("Play RTMP: ffplay rtmp://{rtmp}/live/test");
    }
    println!("HLS:       http://{http}/live/test/index.m3u8");
    println!("HTTP-FLV:  http://{http}/live/test.flv");
    if let Some(metrics) = node.metrics_addr() {
        let metrics = url_host(metrics);
        println!("Metrics:   http://{metrics}/metrics  (streams: http://{metrics}/api/v1/streams)");
        println!("Health:    http://{metrics}/healthz  http://{metrics}/readyz");
    }
    if let Some(cluster) = node.cluster_addr() {
        println!("Cluster:   node {} on {cluster}, nodes: http://{http}/api/v1/nodes", node.id());
    }

    shutdown_signal().await;
    tracing::info!("shutting down");
    node.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
