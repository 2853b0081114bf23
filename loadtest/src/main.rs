//! `zenlive-swarm`: realtime RTMP publishers, RTMP / HTTP-FLV players and WHEP (WebRTC)
//! players in one process, for load-testing ZenLive and its peers (nginx-rtmp, SRS...).
//! Prints a JSON summary on stdout; progress goes to stderr.
//!
//! ```text
//! zenlive-swarm publish --url rtmp://127.0.0.1:1935/live/bench --count 100 --file in.flv --duration 30
//! zenlive-swarm play --url rtmp://127.0.0.1:1935/live/bench --count 500 --duration 30
//! zenlive-swarm play --url http://127.0.0.1:8080/live/bench.flv --count 500 --duration 30
//! zenlive-swarm whep --url http://127.0.0.1:8080/whep/live/bench --count 500 --ramp-up 5 --duration 30
//! zenlive-swarm whip --url http://127.0.0.1:8080/whip/live/bench --count 10 --file in.flv --duration 30
//! zenlive-swarm llhls --url http://127.0.0.1:8080/live/bench/ll.m3u8 --count 1000 --rounds 20
//! zenlive-swarm chat --url ws://127.0.0.1:8080/chat/live/bench --members 2000 --senders 20 \
//!     --rate 5 --secret "$ZENLIVE_AUTH_JWT_SECRET" --duration 30
//! ```

mod chat;
mod client;
mod llhls;
mod peer;
mod player;
mod publisher;
mod rtp;
mod stats;
mod whep;
mod whip;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::RtmpUrl;
use crate::stats::{PlaySummary, PublishSummary, Spread, Tail, WhepSummary};

/// Realtime RTMP publishers and RTMP/HTTP-FLV/WHEP players for load tests.
#[derive(Parser)]
#[command(name = "zenlive-swarm", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N realtime publishers from an FLV file.
    Publish(PublishArgs),
    /// M players over RTMP (rtmp:// URL) or HTTP-FLV (http:// URL).
    Play(Common),
    /// Chat members reading a room and senders posting to it, with delivery latency.
    Chat(ChatArgs),
    /// M WebRTC players over WHEP (http://HOST:8080/whep/{app}/{key}).
    Whep(WhepArgs),
    /// N realtime WebRTC publishers over WHIP (http://HOST:8080/whip/{app}/{key}) of an
    /// FLV file's H.264 video (its audio is not sent).
    Whip(WhipArgs),
    /// M clients blocked on each coming part of an LL-HLS playlist
    /// (http://HOST:8080/{app}/{key}/ll.m3u8), round after round: how long after the first
    /// answer the others come.
    Llhls(LlhlsArgs),
}

#[derive(Args)]
struct LlhlsArgs {
    /// The LL-HLS playlist.
    #[arg(long)]
    url: String,
    /// Clients blocked in each round.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Rounds (one part each).
    #[arg(long, default_value_t = 20)]
    rounds: usize,
}

#[derive(Args)]
struct WhipArgs {
    #[command(flatten)]
    common: Common,
    /// The FLV file whose H.264 video is published, looped.
    #[arg(long)]
    file: std::path::PathBuf,
    /// A bearer token for the POST (when the node's auth is on).
    #[arg(long)]
    token: Option<String>,
}

#[derive(Args)]
struct WhepArgs {
    #[command(flatten)]
    common: Common,
    /// A bearer token for the POST (when the node's auth is on).
    #[arg(long)]
    token: Option<String>,
    /// Offer to receive Opus audio too (sent when the stream has Opus).
    #[arg(long)]
    audio: bool,
}

#[derive(Args)]
struct ChatArgs {
    /// The room's WebSocket URL (ws://HOST:8080/chat/{app}/{key}).
    #[arg(long)]
    url: String,
    /// Members that only read.
    #[arg(long, default_value_t = 100)]
    members: usize,
    /// Members that also post.
    #[arg(long, default_value_t = 10)]
    senders: usize,
    /// Messages per second per sender.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// The node's HMAC secret: senders get tokens minted with it.
    #[arg(long)]
    secret: String,
    /// Seconds over which members connect.
    #[arg(long, default_value_t = 5.0)]
    ramp_up: f64,
    /// Seconds senders post after every member connected.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
}

#[derive(Args, Clone)]
struct Common {
    /// Target URL. With --count > 1, `{i}` in it is replaced by the client's index, or
    /// (for publishers, without `{i}`) `-{i}` is appended to the stream key.
    #[arg(long)]
    url: String,
    /// How many clients.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Seconds over which clients start, evenly spread.
    #[arg(long, default_value_t = 0.0)]
    ramp_up: f64,
    /// Seconds the run lasts (from the start of the first client).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
}

#[derive(Args)]
struct PublishArgs {
    #[command(flatten)]
    common: Common,
    /// The FLV file to publish (H.264 + AAC), looped.
    #[arg(long)]
    file: std::path::PathBuf,
}

fn client_url(url: &str, i: usize, count: usize, suffix_key: bool) -> String {
    if url.contains("{i}") {
        url.replace("{i}", &i.to_string())
    } else if suffix_key && count > 1 {
        format!("{url}-{i}")
    } else {
        url.to_owned()
    }
}

fn start_offset(common: &Common, i: usize) -> Duration {
    Duration::from_secs_f64(common.ramp_up.max(0.0) * i as f64 / common.count.max(1) as f64)
}

fn error_kind(error: &anyhow::Error) -> String {
    let text = error.to_string();
    text.split(':').next().unwrap_or(&text).chars().take(60).collect()
}

async fn publish(args: PublishArgs) -> Result<()> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let source = Arc::new(publisher::Source::parse(&bytes)?);
    let common = args.common;
    let begin = Instant::now();
    let deadline = begin + Duration::from_secs_f64(common.duration);
    let mut tasks = JoinSet::new();
    for i in 0..common.count {
        let url = RtmpUrl::parse(&client_url(&common.url, i, common.count, true))?;
        let (source, offset) = (Arc::clone(&source), start_offset(&common, i));
        tasks.spawn(async move {
            tokio::time::sleep(offset).await;
            publisher::run(url, source, deadline).await
        });
    }
    eprintln!("zenlive-swarm: {} publishers started", common.count);
    let (mut completed, mut bytes_sent, mut fell_behind) = (0, 0, 0);
    let mut errors = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.context("publisher task")? {
            Ok(stats) => {
                completed += 1;
                bytes_sent += stats.bytes;
                fell_behind += usize::from(stats.max_lag > Duration::from_secs(1));
            }
            Err(error) => *errors.entry(error_kind(&error)).or_insert(0) += 1,
        }
    }
    let summary = PublishSummary {
        publishers: common.count,
        completed,
        duration_secs: begin.elapsed().as_secs_f64(),
        bytes: bytes_sent,
        fell_behind,
        errors,
    };
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

async fn play(common: Common) -> Result<()> {
    let begin = Instant::now();
    let deadline = begin + Duration::from_secs_f64(common.duration);
    let mut tasks = JoinSet::new();
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    for i in 0..common.count {
        let url = client_url(&common.url, i, common.count, false);
        let offset = start_offset(&common, i);
        let http = http.clone();
        tasks.spawn(async move {
            tokio::time::sleep(offset).await;
            let started = Instant::now();
            let stats = if url.starts_with("rtmp://") {
                player::rtmp(RtmpUrl::parse(&url)?, deadline).await
            } else {
                player::http_flv(&http, &url, deadline).await
            };
            stats.map(|s| (s, started.elapsed()))
        });
    }
    eprintln!("zenlive-swarm: {} players started", common.count);
    let (mut fps, mut startup, mut bytes, mut stalls, mut with_video, mut off_key) =
        (vec![], vec![], 0, 0, 0, 0);
    let mut errors = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.context("player task")? {
            Ok((stats, elapsed)) => {
                bytes += stats.bytes;
                stalls += stats.stalls;
                if stats.video_frames > 0 {
                    with_video += 1;
                    fps.push(stats.fps(elapsed));
                }
                if let Some(s) = stats.startup {
                    startup.push(s.as_secs_f64() * 1000.0);
                }
                off_key += usize::from(stats.started_on_keyframe == Some(false));
            }
            Err(error) => *errors.entry(error_kind(&error)).or_insert(0) += 1,
        }
    }
    let summary = PlaySummary {
        players: common.count,
        players_with_video: with_video,
        duration_secs: begin.elapsed().as_secs_f64(),
        bytes,
        fps: Spread::of(fps),
        startup_ms: Spread::of(startup),
        started_off_keyframe: off_key,
        stalls,
        errors,
    };
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

async fn whep_run(args: WhepArgs) -> Result<()> {
    let common = args.common;
    let shared = Arc::new(peer::Shared::new(&common.url, args.token)?);
    let audio = args.audio;
    let begin = Instant::now();
    let deadline = begin + Duration::from_secs_f64(common.duration);
    let mut tasks = JoinSet::new();
    for i in 0..common.count {
        let url = client_url(&common.url, i, common.count, false);
        let (shared, offset) = (Arc::clone(&shared), start_offset(&common, i));
        tasks.spawn(async move {
            tokio::time::sleep(offset).await;
            whep::run(shared, url, audio, deadline).await
        });
    }
    eprintln!("zenlive-swarm: {} WHEP players started", common.count);
    let end = deadline.into_std();
    let mut summary = WhepSummary {
        players: common.count,
        connected: 0,
        players_with_video: 0,
        duration_secs: 0.0,
        packets: 0,
        bytes: 0,
        mbps_per_player: None,
        audio_packets: 0,
        lost_packets: 0,
        frames: 0,
        keyframes: 0,
        fps: None,
        join_ms: None,
        connect_ms: None,
        stalls: 0,
        players_with_stalls: 0,
        ended_early: 0,
        errors: BTreeMap::new(),
    };
    let (mut fps, mut join, mut connect, mut mbps) = (vec![], vec![], vec![], vec![]);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    while let Some(joined) = tasks.join_next().await {
        match joined.context("WHEP player task")? {
            Ok(played) => {
                let s = played.stats;
                summary.connected += usize::from(s.connected.is_some());
                summary.packets += s.packets;
                summary.bytes += s.bytes;
                summary.audio_packets += s.audio_packets;
                summary.lost_packets += s.lost;
                summary.frames += s.frames;
                summary.keyframes += s.keyframes;
                summary.stalls += s.stalls;
                summary.players_with_stalls += usize::from(s.stalls > 0);
                summary.ended_early += usize::from(played.ended_early);
                connect.extend(s.connected.map(ms));
                if let Some(joined) = s.join {
                    summary.players_with_video += 1;
                    join.push(ms(joined));
                    fps.extend(s.fps(end));
                    mbps.extend(s.mbps(end));
                }
            }
            Err(error) => *summary.errors.entry(error_kind(&error)).or_insert(0) += 1,
        }
    }
    summary.duration_secs = begin.elapsed().as_secs_f64();
    summary.fps = Spread::of(fps);
    summary.join_ms = Tail::of(join);
    summary.connect_ms = Tail::of(connect);
    summary.mbps_per_player = Spread::of(mbps);
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

async fn whip_run(args: WhipArgs) -> Result<()> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let video = Arc::new(whip::Video::new(&publisher::Source::parse(&bytes)?)?);
    let common = args.common;
    let shared = Arc::new(peer::Shared::new(&common.url, args.token)?);
    let begin = Instant::now();
    let deadline = begin + Duration::from_secs_f64(common.duration);
    let mut tasks = JoinSet::new();
    for i in 0..common.count {
        let url = client_url(&common.url, i, common.count, true);
        let (shared, video, offset) =
            (Arc::clone(&shared), Arc::clone(&video), start_offset(&common, i));
        tasks.spawn(async move {
            tokio::time::sleep(offset).await;
            whip::run(shared, url, video, deadline).await
        });
    }
    eprintln!("zenlive-swarm: {} WHIP publishers started", common.count);
    let (mut completed, mut bytes_sent, mut fell_behind) = (0, 0, 0);
    let mut errors = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.context("WHIP publisher task")? {
            Ok(stats) => {
                completed += 1;
                bytes_sent += stats.bytes;
                fell_behind += usize::from(stats.max_lag > Duration::from_secs(1));
            }
            Err(error) => *errors.entry(error_kind(&error)).or_insert(0) += 1,
        }
    }
    let summary = PublishSummary {
        publishers: common.count,
        completed,
        duration_secs: begin.elapsed().as_secs_f64(),
        bytes: bytes_sent,
        fell_behind,
        errors,
    };
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).map_or(0.0, |us| f64::from(*us) / 1000.0)
}

async fn chat_run(args: ChatArgs) -> Result<()> {
    let begin = Instant::now();
    let senders_start = begin + Duration::from_secs_f64(args.ramp_up + 1.0);
    let deadline = senders_start + Duration::from_secs_f64(args.duration);
    // Members read a little past the last send, so nothing in flight is missed.
    let members_until = deadline + Duration::from_secs(2);
    let mut members = JoinSet::new();
    for i in 0..args.members {
        let offset = Duration::from_secs_f64(args.ramp_up * i as f64 / args.members.max(1) as f64);
        // Signed in, so a member may open the room of a stream that is not live
        // (`chat.rooms_without_stream = "signed_in"`, the default).
        let token = chat::mint(&args.secret, &format!("swarm-member-{i}"));
        let url = format!("{}?token={token}", args.url);
        members.spawn(async move {
            tokio::time::sleep(offset).await;
            chat::member(url, members_until).await
        });
    }
    let mut senders = JoinSet::new();
    for i in 0..args.senders {
        let token = chat::mint(&args.secret, &format!("swarm-sender-{i}"));
        let url = format!("{}?token={token}", args.url);
        let rate = args.rate;
        senders.spawn(async move {
            tokio::time::sleep_until(senders_start).await;
            chat::sender(url, rate, deadline).await
        });
    }
    eprintln!("zenlive-swarm: {} members and {} senders started", args.members, args.senders);
    let mut errors = BTreeMap::new();
    let mut sent = 0;
    while let Some(joined) = senders.join_next().await {
        match joined.context("sender task")? {
            Ok(n) => sent += n,
            Err(error) => *errors.entry(error_kind(&error)).or_insert(0) += 1,
        }
    }
    let (mut deliveries, mut refused, mut latencies, mut connected) = (0, 0, Vec::new(), 0);
    while let Some(joined) = members.join_next().await {
        match joined.context("member task")? {
            Ok(stats) => {
                connected += 1;
                deliveries += stats.deliveries;
                refused += stats.errors;
                latencies.extend(stats.latencies_us);
            }
            Err(error) => *errors.entry(error_kind(&error)).or_insert(0) += 1,
        }
    }
    latencies.sort_unstable();
    let window = args.duration.max(0.001);
    let summary = serde_json::json!({
        "members": args.members,
        "members_completed": connected,
        "senders": args.senders,
        "messages_sent": sent,
        "deliveries": deliveries,
        "deliveries_per_second": deliveries as f64 / window,
        "expected_deliveries": sent * args.members as u64,
        "latency_ms": {
            "p50": percentile(&latencies, 0.50),
            "p99": percentile(&latencies, 0.99),
            "max": percentile(&latencies, 1.0),
        },
        "refused": refused,
        "errors": errors,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let run = async {
        match cli.command {
            Command::Publish(args) => publish(args).await,
            Command::Play(common) => play(common).await,
            Command::Chat(args) => chat_run(args).await,
            Command::Whep(args) => whep_run(args).await,
            Command::Whip(args) => whip_run(args).await,
            Command::Llhls(args) => {
                let summary = llhls::run(&args.url, args.count, args.rounds).await?;
                println!("{}", serde_json::to_string_pretty(&summary)?);
                Ok(())
            }
        }
    };
    tokio::select! {
        result = run => result,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("zenlive-swarm: interrupted");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_urls() {
        assert_eq!(client_url("rtmp://h/live/k", 3, 5, true), "rtmp://h/live/k-3");
        assert_eq!(client_url("rtmp://h/live/k", 0, 1, true), "rtmp://h/live/k");
        assert_eq!(client_url("rtmp://h/live/k{i}x", 2, 5, true), "rtmp://h/live/k2x");
        assert_eq!(client_url("rtmp://h/live/k", 3, 5, false), "rtmp://h/live/k");
    }
}
