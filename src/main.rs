//! The `zenlive` node binary: parse the command line, load the configuration, start a node,
//! and shut it down cleanly on SIGINT/SIGTERM.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use zenlive::auth::{unix_now, Auth, Claims, Role};
use zenlive::config::{parse_listen_addr, Deprecated, LogFormat};
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
/// environment, then the file, then built-in defaults. See zenlive.example.toml. The flags
/// below work before or after a subcommand.
#[derive(Debug, Parser)]
#[command(name = "zenlive", version)]
struct Cli {
    /// TOML configuration file (also `ZENLIVE_CONFIG`).
    #[arg(long, short, global = true, env = "ZENLIVE_CONFIG")]
    config: Option<PathBuf>,
    /// RTMP listen address, HOST:PORT [default: 0.0.0.0:1935].
    #[arg(long, global = true, value_parser = parse_listen_addr)]
    rtmp_addr: Option<SocketAddr>,
    /// HTTP listen address (HLS, HTTP-FLV), HOST:PORT [default: 0.0.0.0:8080].
    #[arg(long, global = true, value_parser = parse_listen_addr)]
    http_addr: Option<SocketAddr>,
    /// Metrics and health listen address, HOST:PORT [default: 0.0.0.0:9090].
    #[arg(long, global = true, value_parser = parse_listen_addr)]
    metrics_addr: Option<SocketAddr>,
    /// Log format: text or json.
    #[arg(long, global = true, value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// This node's id (node.id) [default: random].
    #[arg(long, global = true)]
    node_id: Option<String>,
    /// Join a cluster through the Redis at this URL (sets cluster.enabled and
    /// cluster.redis_url), e.g. redis://127.0.0.1:6379/.
    #[arg(long, global = true)]
    cluster_redis: Option<String>,
    /// Where to listen for other cluster nodes, HOST:PORT [default: 127.0.0.1:7946].
    #[arg(long, global = true, value_parser = parse_listen_addr)]
    cluster_addr: Option<SocketAddr>,
    /// The host other nodes reach this one at (cluster.advertise_host).
    #[arg(long, global = true)]
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
    /// Check the configuration (file, environment, flags) and exit: 0 when the node would
    /// start with it, 1 with the first problem otherwise. Deprecated keys are warned about
    /// on stderr.
    Check,
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

/// Changes the log filter of the running process (a SIGHUP reload of `log.level`).
type SetLogLevel = Box<dyn Fn(&str) -> Result<(), String>>;

fn init_logging(config: &Config) -> SetLogLevel {
    let from_env = EnvFilter::try_from_default_env().ok();
    let pinned = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(&config.log.level));
    // Logs go to stderr; stdout carries only the start-up banner with the URLs. Colours only
    // on a terminal (and never with NO_COLOR), so files and journald get plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let set = |reload: Box<dyn Fn(EnvFilter) -> Result<(), String>>| -> SetLogLevel {
        Box::new(move |level: &str| {
            if pinned {
                return Err("RUST_LOG is set and takes precedence over log.level".into());
            }
            reload(EnvFilter::new(level))
        })
    };
    if config.log.format == LogFormat::Json {
        let builder = builder.json().with_filter_reloading();
        let handle = builder.reload_handle();
        builder.init();
        set(Box::new(move |filter| handle.reload(filter).map_err(|e| e.to_string())))
    } else {
        let builder = builder.with_filter_reloading();
        let handle = builder.reload_handle();
        builder.init();
        set(Box::new(move |filter| handle.reload(filter).map_err(|e| e.to_string())))
    }
}

fn url_host(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// Waits for SIGINT or SIGTERM. SIGHUP, which would otherwise end the process, reloads what
/// can change while the node runs (see [`on_hangup`]).
async fn shutdown_signal(cli: &Cli, node: &zenlive::Node, set_log_level: &SetLogLevel) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut hangup)) =
            (signal(SignalKind::terminate()), signal(SignalKind::hangup()))
        else {
            return ctrl_c.await.unwrap_or(());
        };
        tokio::pin!(ctrl_c);
        loop {
            tokio::select! {
                _ = &mut ctrl_c => return,
                _ = term.recv() => return,
                _ = hangup.recv() => on_hangup(cli, node, set_log_level),
            }
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}

/// What the banner says about auth.
fn auth_summary(node: &zenlive::Node) -> String {
    let config = &node.config().auth;
    let configured = !config.jwt_secret.is_empty() || !config.public_key.is_empty();
    let need = |required: bool| if required { "a token" } else { "no token" };
    match configured {
        false => "off: anyone may publish and play; the admin API is closed (set auth.jwt_secret)"
            .to_owned(),
        true => format!(
            "on ({}): publishing needs {}, playing needs {}; the admin API needs an admin token",
            config.algorithm,
            need(config.require_publish),
            need(config.require_play)
        ),
    }
}

/// SIGHUP: reads the configuration again and applies what can change while the node runs
/// (`[auth]`, the TLS files, `log.level`); says which changed keys need a restart. An
/// invalid configuration changes nothing. Never stops the node.
fn on_hangup(cli: &Cli, node: &zenlive::Node, set_log_level: &SetLogLevel) {
    let config = match load(cli) {
        Ok((config, deprecated)) => {
            for warning in &deprecated {
                tracing::warn!("SIGHUP: {warning}");
            }
            config
        }
        Err(error) => {
            tracing::error!("SIGHUP: the configuration is invalid, nothing changed: {error:#}");
            return;
        }
    };
    let reloaded = match node.reload(&config) {
        Ok(reloaded) => reloaded,
        Err(error) => {
            tracing::error!("SIGHUP: not reloaded, nothing changed: {error}");
            return;
        }
    };
    if let Some(level) = &reloaded.log_level {
        if let Err(error) = set_log_level(level) {
            tracing::warn!("SIGHUP: log.level not applied: {error}");
        }
    }
    let list =
        |keys: &[String]| if keys.is_empty() { "nothing".to_owned() } else { keys.join(", ") };
    tracing::warn!(
        "SIGHUP: configuration valid; applied: {}; TLS files reloaded: {}; changed but needs a restart: {}",
        list(&reloaded.applied),
        node.https_addr().is_some(),
        list(&reloaded.need_restart)
    );
}

/// The configuration from the file, the environment and the flags, and the deprecated keys
/// it uses (for the caller to warn about).
fn load(cli: &Cli) -> anyhow::Result<(Config, Vec<Deprecated>)> {
    let (mut config, deprecated) = Config::load_reporting(cli.config.as_deref(), std::env::vars())?;
    if let Some(addr) = cli.rtmp_addr {
        config.rtmp.addr = addr;
    }
    if let Some(addr) = cli.http_addr {
        config.http.addr = addr;
    }
    if let Some(addr) = cli.metrics_addr {
        config.metrics.addr = addr;
    }
    if let Some(id) = &cli.node_id {
        config.node.id = id.clone();
    }
    if let Some(url) = &cli.cluster_redis {
        config.cluster.enabled = true;
        config.cluster.redis_url = url.clone();
    }
    if let Some(addr) = cli.cluster_addr {
        config.cluster.addr = addr;
    }
    if let Some(host) = &cli.advertise_host {
        config.cluster.advertise_host = host.clone();
    }
    if let Some(format) = &cli.log_format {
        config.log.format = format.parse().map_err(anyhow::Error::msg)?;
    }
    config.validate()?;
    // The key material the `[auth]` settings name is read and checked here, as at start.
    zenlive::auth::Auth::new(&config.auth)?;
    Ok((config, deprecated))
}

/// Any failure to start is one line on stderr and exit status 1: the cause, the address or
/// key it is about, and what changes it. The process exits without unwinding the runtime,
/// whose half-started actors would otherwise print panics about a missing reactor.
#[actix_web::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("zenlive: {error:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (config, deprecated) = load(&cli)?;
    match cli.command {
        Some(Command::Token(args)) => return print_token(&config, args),
        Some(Command::Drain(args)) => return drain(&config, args).await,
        Some(Command::Check) => {
            for warning in &deprecated {
                eprintln!("zenlive: warning: {warning}");
            }
            println!("configuration OK");
            return Ok(());
        }
        None => {}
    }
    let set_log_level = init_logging(&config);
    // Once, now that there is a logger to say it.
    for warning in &deprecated {
        tracing::warn!("{warning}");
    }

    let node = NodeBuilder::new(config).start().await?;
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
    println!("Chat:      ws://{http}/chat/live/test");
    if node.config().ui.enabled {
        println!("Pages:     http://{http}/  (watch: /watch/live/test, console: /console)");
    }
    if let Some(rtmps) = node.rtmps_addr() {
        println!("RTMPS:     rtmps://{}/live/test", url_host(rtmps));
    }
    if let Some(https) = node.https_addr() {
        let https = url_host(https);
        println!("HTTPS:     https://{https}/live/test/index.m3u8  wss://{https}/chat/live/test");
    }
    println!("Auth:      {}", auth_summary(&node));
    if let Some(metrics) = node.metrics_addr() {
        let metrics = url_host(metrics);
        println!("Metrics:   http://{metrics}/metrics  (streams: http://{metrics}/api/v1/streams)");
        println!("Health:    http://{metrics}/healthz  http://{metrics}/readyz");
    }
    if let Some(cluster) = node.cluster_addr() {
        println!("Cluster:   node {} on {cluster}, nodes: http://{http}/api/v1/nodes", node.id());
    }

    shutdown_signal(&cli, &node, &set_log_level).await;
    tracing::info!("shutting down");
    node.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
