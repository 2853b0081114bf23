//! Players: RTMP play through rml_rtmp, or HTTP-FLV through reqwest read with the bounded
//! FLV demuxer. Both count bytes, frames, startup time and stalls.

use anyhow::{bail, Context, Result};
use rml_rtmp::sessions::ClientSessionEvent;
use tokio::time::Instant;
use zenlive_media::flv::{FlvDemuxer, TagType};

use crate::client::{Client, RtmpUrl};
use crate::stats::PlayerStats;

fn video_flags(body: &[u8]) -> (bool, bool) {
    let keyframe = body.first().is_some_and(|b| b >> 4 == 1);
    let header = body.get(1) == Some(&0);
    (keyframe, header)
}

/// Plays `url` over RTMP until `deadline`.
pub async fn rtmp(url: RtmpUrl, deadline: Instant) -> Result<PlayerStats> {
    let started = std::time::Instant::now();
    let mut client = Client::connect(&url).await?;
    let mut events = client.play(&url.key).await?;
    let mut stats = PlayerStats::default();
    loop {
        let now = std::time::Instant::now();
        for event in events {
            match event {
                ClientSessionEvent::VideoDataReceived { data, timestamp } => {
                    let (keyframe, header) = video_flags(&data);
                    if header {
                        stats.other(false, data.len());
                    } else {
                        stats.video(started, now, timestamp.value, keyframe, data.len());
                    }
                }
                ClientSessionEvent::AudioDataReceived { data, .. } => stats.other(true, data.len()),
                _ => {}
            }
        }
        let read = tokio::time::timeout_at(deadline, client.read_events()).await;
        let Ok(read) = read else { return Ok(stats) };
        events = read?.1;
    }
}

/// Plays `url` (`http://host:port/path.flv`) until `deadline`.
pub async fn http_flv(http: &reqwest::Client, url: &str, deadline: Instant) -> Result<PlayerStats> {
    let started = std::time::Instant::now();
    let mut response = http.get(url).send().await.context("http request")?;
    if !response.status().is_success() {
        bail!("HTTP status {}", response.status());
    }
    let mut demux = FlvDemuxer::new();
    let mut stats = PlayerStats::default();
    loop {
        let Ok(chunk) = tokio::time::timeout_at(deadline, response.chunk()).await else {
            return Ok(stats);
        };
        let Some(chunk) = chunk? else { bail!("server closed the stream") };
        demux.push(&chunk);
        while let Some(tag) = demux.next_tag() {
            let tag = tag?;
            let now = std::time::Instant::now();
            match tag.tag_type {
                TagType::Video => {
                    let (keyframe, header) = video_flags(&tag.body);
                    if header {
                        stats.other(false, tag.body.len());
                    } else {
                        stats.video(started, now, tag.timestamp_ms, keyframe, tag.body.len());
                    }
                }
                TagType::Audio => stats.other(true, tag.body.len()),
                TagType::Script => stats.other(false, tag.body.len()),
            }
        }
    }
}
