//! Embedding ZenLive in an application: start a node on your own ports, hear about streams
//! starting and ending, add an output of your own that sees every stream's frames (here: it
//! logs keyframe timestamps, where a real one might cut thumbnails), and kick a publisher by
//! name from application code.
//!
//! Run: `cargo run --example embed -- 127.0.0.1:1935 127.0.0.1:8080`, then publish with
//! `ffmpeg -re -f lavfi -i testsrc=size=640x360:rate=30 -c:v libx264 -f flv rtmp://127.0.0.1:1935/live/demo`.
//! The example kicks every stream 10 seconds after it starts, to show the handle at work.
//! With `ZENLIVE_EXAMPLE_EXIT_AFTER=N` it stops by itself after N seconds (tests use it).

use std::time::Duration;

use zenlive::{
    Config, FrameSink, MediaFrame, MediaTime, NodeBuilder, Offer, Output, OutputStream,
    StreamEvent, StreamKey,
};

/// An output that notes every stream's keyframes.
struct KeyframeLog;

impl Output for KeyframeLog {
    fn name(&self) -> &'static str {
        "keyframe-log"
    }

    fn open(&self, stream: &OutputStream) -> Option<Box<dyn FrameSink>> {
        Some(Box::new(KeyframeSink { key: stream.key.clone(), count: 0, last: None }))
    }
}

/// One stream's end of [`KeyframeLog`]: it must never block (it runs beside viewers).
struct KeyframeSink {
    key: StreamKey,
    count: u64,
    last: Option<MediaTime>,
}

impl FrameSink for KeyframeSink {
    fn offer(&mut self, frame: &MediaFrame) -> Offer {
        if frame.keyframe() {
            self.count += 1;
            let gap = self.last.map(|last| frame.pts() - last);
            self.last = Some(frame.pts());
            println!(
                "OUTPUT {}: keyframe {} ({}) at {}, {} since the last",
                self.key,
                self.count,
                frame.codec().as_str(),
                frame.pts(),
                gap.map_or("-".to_owned(), |g| g.to_string())
            );
        }
        Offer::Accepted(0)
    }

    fn finish(&mut self, reason: &str) {
        println!("OUTPUT {}: {} keyframes; ended ({reason})", self.key, self.count);
    }
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let mut args = std::env::args().skip(1);
    let mut config = Config::default();
    config.rtmp.addr = args.next().unwrap_or_else(|| "127.0.0.1:1935".into()).parse()?;
    config.http.addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into()).parse()?;
    // WHIP media beside HTTP, on a port the OS picks (the answer advertises it).
    config.webrtc.udp_addr = std::net::SocketAddr::new(config.http.addr.ip(), 0);
    config.metrics.enabled = false;

    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let node = NodeBuilder::new(config)
        .output(KeyframeLog)
        .on_stream_start(move |event| {
            if let StreamEvent::Started { key, peer, .. } = event {
                println!("EVENT stream started: {key} from {peer:?}");
                let _ = started_tx.send(key.clone());
            }
        })
        .on_stream_end(|event| {
            if let StreamEvent::Ended { key, duration, bytes_in, reason, .. } = event {
                println!(
                    "EVENT stream ended: {key} after {duration:?}, {bytes_in} bytes ({reason})"
                );
            }
        })
        .start()
        .await?;
    println!("READY rtmp={:?} http={}", node.rtmp_addr(), node.http_addr());

    let exit_after = std::env::var("ZENLIVE_EXAMPLE_EXIT_AFTER")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    let deadline = async {
        match exit_after {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            Some(key) = started_rx.recv() => {
                // Give the stream some air time, then kick it through its handle.
                tokio::time::sleep(Duration::from_secs(10)).await;
                if let Some(stream) = node.stream(&key) {
                    let stats = stream.stats();
                    println!(
                        "STATS {key}: {:.1} fps, {} bit/s, {:?}, {} viewers",
                        stats.rates.fps,
                        stats.rates.bitrate_bps,
                        stats.media.video.as_ref().map(|v| (v.width, v.height)),
                        stats.viewers_now()
                    );
                    let kicked = stream.kick("example: time is up").await;
                    println!("KICKED {key}: {kicked}");
                }
            }
            _ = &mut deadline => break,
        }
    }
    node.shutdown().await;
    Ok(())
}
