//! A realtime publisher: sends an FLV file's tags paced by their timestamps (like
//! `ffmpeg -re`), looping with ever-increasing timestamps until the deadline.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use rml_amf0::Amf0Value;
use rml_rtmp::sessions::StreamMetadata;
use rml_rtmp::time::RtmpTimestamp;
use tokio::time::Instant;
use zenlive_media::flv::{FlvDemuxer, FlvTag, TagType};

use crate::client::{Client, RtmpUrl};
use crate::stats::PublisherStats;

/// An FLV file loaded for publishing: its media tags and its metadata.
pub struct Source {
    /// Audio and video tags in file order.
    pub tags: Vec<FlvTag>,
    /// `onMetaData`, if the file has it.
    pub metadata: Option<StreamMetadata>,
    /// Media time from the first tag to one frame past the last, in ms.
    pub span_ms: u64,
}

impl Source {
    /// Reads `bytes` (a whole FLV file).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut demux = FlvDemuxer::new();
        demux.push(bytes);
        let (mut tags, mut metadata) = (Vec::new(), None);
        while let Some(tag) = demux.next_tag() {
            let tag = tag.context("reading the FLV file")?;
            match tag.tag_type {
                TagType::Script => metadata = metadata.or_else(|| parse_metadata(&tag.body)),
                _ => tags.push(tag),
            }
        }
        let first =
            tags.first().ok_or_else(|| anyhow!("the FLV file has no audio or video"))?.timestamp_ms;
        let last = tags.iter().map(|t| t.timestamp_ms).max().unwrap_or(first);
        Ok(Self { tags, metadata, span_ms: u64::from(last.saturating_sub(first)) + 33 })
    }
}

/// `onMetaData` from a script tag body, as rml_rtmp wants it.
fn parse_metadata(body: &Bytes) -> Option<StreamMetadata> {
    let values = rml_amf0::deserialize(&mut std::io::Cursor::new(body.as_ref())).ok()?;
    let props = match values.get(1)? {
        Amf0Value::Object(props) => props,
        _ => return None,
    };
    let num = |k: &str| match props.get(k) {
        Some(Amf0Value::Number(n)) => Some(*n),
        _ => None,
    };
    let mut m = StreamMetadata::new();
    m.video_width = num("width").map(|n| n as u32);
    m.video_height = num("height").map(|n| n as u32);
    m.video_codec_id = num("videocodecid").map(|n| n as u32);
    m.video_frame_rate = num("framerate").map(|n| n as f32);
    m.video_bitrate_kbps = num("videodatarate").map(|n| n as u32);
    m.audio_codec_id = num("audiocodecid").map(|n| n as u32);
    m.audio_bitrate_kbps = num("audiodatarate").map(|n| n as u32);
    m.audio_sample_rate = num("audiosamplerate").map(|n| n as u32);
    m.audio_channels = num("audiochannels").map(|n| n as u32);
    Some(m)
}

fn is_sequence_header(tag: &FlvTag) -> bool {
    tag.body.get(1) == Some(&0) && matches!(tag.body.first().map(|b| b >> 4), Some(10) | Some(1))
}

/// Publishes `source` to `url` in realtime until `deadline`.
pub async fn run(url: RtmpUrl, source: Arc<Source>, deadline: Instant) -> Result<PublisherStats> {
    let mut client = Client::connect(&url).await?;
    client.publish(&url.key).await?;
    let mut stats = PublisherStats::default();
    if let Some(metadata) = &source.metadata {
        let packet = client.session.publish_metadata(metadata).map_err(|e| anyhow!("{e:?}"))?;
        client.send(vec![packet]).await?;
    }
    let first = source.tags.first().map_or(0, |t| t.timestamp_ms);
    let start = Instant::now();
    for round in 0u64.. {
        for tag in &source.tags {
            if round > 0 && is_sequence_header(tag) {
                continue;
            }
            let media_ms =
                round * source.span_ms + u64::from(tag.timestamp_ms.saturating_sub(first));
            let due = start + Duration::from_millis(media_ms);
            if due >= deadline {
                return Ok(stats);
            }
            let now = Instant::now();
            if due > now {
                tokio::time::sleep_until(due).await;
            } else {
                stats.max_lag = stats.max_lag.max(now - due);
            }
            let ts = RtmpTimestamp::new(media_ms as u32);
            let packet = match tag.tag_type {
                TagType::Video => client.session.publish_video_data(tag.body.clone(), ts, false),
                _ => client.session.publish_audio_data(tag.body.clone(), ts, false),
            }
            .map_err(|e| anyhow!("{e:?}"))?;
            client.send(vec![packet]).await?;
            stats.bytes += tag.body.len() as u64;
            stats.messages += 1;
        }
    }
    Ok(stats)
}
