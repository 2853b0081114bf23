//! [`StreamPublisher`]: a publisher connection's side of its stream, for every ingest
//! protocol. It starts the stream through the supervisor, pushes frames with backpressure
//! from the stream actor only, and, if the stream actor crashes and is restarted, attaches
//! to the new instance and replays the codec headers so viewers can decode again.

use std::net::SocketAddr;
use std::time::Duration;

use actix::dev::SendError;
use actix::prelude::*;
use tokio::sync::mpsc;

use crate::key::StreamKey;
use crate::stream::{Attach, Detach, PublisherCommand, PublisherHandle, PushFrame, StreamError};
use crate::supervisor::{Directory, StartError, StartStream, StreamEntry, StreamSupervisor};
use crate::viewer::next_connection_id;
use crate::{FrameKind, MediaFrame, Protocol};

/// How many times a publisher looks for a restarted stream actor before giving up.
const REATTACH_ATTEMPTS: u32 = 20;
/// Pause between those looks.
const REATTACH_PAUSE: Duration = Duration::from_millis(25);

/// Why publishing stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The stream could not be started.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The stream actor is gone and no restarted instance could be attached.
    #[error("stream {key} ended")]
    StreamGone {
        /// The stream.
        key: StreamKey,
    },
}

/// A publisher's handle on its stream. See the module docs.
pub struct StreamPublisher {
    key: StreamKey,
    handle: PublisherHandle,
    stream: StreamEntry,
    directory: Directory,
    metadata: Option<MediaFrame>,
    video_header: Option<MediaFrame>,
    audio_header: Option<MediaFrame>,
}

impl StreamPublisher {
    /// Starts `key` for a publisher connected over `protocol` from `peer` as `user` (the
    /// token's subject, when auth identified one), on the current
    /// arbiter. Returns the publisher and the receiver of commands for its connection.
    pub async fn start(
        supervisor: &Addr<StreamSupervisor>,
        directory: Directory,
        key: StreamKey,
        protocol: Protocol,
        peer: Option<SocketAddr>,
        user: Option<String>,
    ) -> Result<(Self, mpsc::Receiver<PublisherCommand>), PublishError> {
        Self::start_as(supervisor, directory, key, protocol, peer, user, false).await
    }

    /// Starts a local copy of `key`, a stream another node owns (an edge relay): like
    /// [`StreamPublisher::start`], but no name is claimed in the registry.
    pub async fn start_replica(
        supervisor: &Addr<StreamSupervisor>,
        directory: Directory,
        key: StreamKey,
        peer: Option<SocketAddr>,
    ) -> Result<(Self, mpsc::Receiver<PublisherCommand>), PublishError> {
        Self::start_as(supervisor, directory, key, Protocol::Relay, peer, None, true).await
    }

    async fn start_as(
        supervisor: &Addr<StreamSupervisor>,
        directory: Directory,
        key: StreamKey,
        protocol: Protocol,
        peer: Option<SocketAddr>,
        user: Option<String>,
        replica: bool,
    ) -> Result<(Self, mpsc::Receiver<PublisherCommand>), PublishError> {
        let (control, commands) = mpsc::channel(4);
        let handle = PublisherHandle { id: next_connection_id(), protocol, peer, user, control };
        let start = StartStream {
            key: key.clone(),
            publisher: handle.clone(),
            arbiter: actix_rt::Arbiter::current(),
            replica,
        };
        let stream = supervisor.send(start).await.map_err(|_| StartError::ShuttingDown)??;
        let publisher = Self {
            key,
            handle,
            stream,
            directory,
            metadata: None,
            video_header: None,
            audio_header: None,
        };
        Ok((publisher, commands))
    }

    /// The stream's name.
    pub fn key(&self) -> &StreamKey {
        &self.key
    }

    /// Pushes one frame; waits only for the stream actor's mailbox.
    pub async fn push(&mut self, frame: MediaFrame) -> Result<(), PublishError> {
        match (frame.kind, frame.sequence_header) {
            (FrameKind::Data, _) => self.metadata = Some(frame.clone()),
            (FrameKind::Video, true) => self.video_header = Some(frame.clone()),
            (FrameKind::Audio, true) => self.audio_header = Some(frame.clone()),
            _ => {}
        }
        // `try_send` respects the mailbox bound without a reply channel per frame; only a
        // full mailbox makes the publisher wait (its sole backpressure).
        let delivered = match self.stream.addr.try_send(PushFrame { frame }) {
            Ok(()) => true,
            Err(SendError::Full(msg)) => {
                self.stream.stats.mailbox_full();
                self.stream.addr.send(msg).await.is_ok()
            }
            Err(SendError::Closed(_)) => false,
        };
        if delivered {
            return Ok(());
        }
        // The frame that failed is lost with the crashed instance; the next keyframe
        // restores the picture.
        self.reattach().await
    }

    async fn reattach(&mut self) -> Result<(), PublishError> {
        for _ in 0..REATTACH_ATTEMPTS {
            match self.directory.get(&self.key) {
                Some(entry)
                    if entry.lineage == self.stream.lineage
                        && entry.generation != self.stream.generation =>
                {
                    match entry.addr.send(Attach { publisher: self.handle.clone() }).await {
                        Ok(Ok(())) => {}
                        Ok(Err(StreamError::AlreadyPublishing { .. })) | Err(_) => break,
                    }
                    self.stream = entry;
                    let replay = [&self.metadata, &self.video_header, &self.audio_header];
                    for frame in replay.into_iter().flatten().cloned() {
                        // A failure here is seen again on the next push.
                        let _ = self.stream.addr.send(PushFrame { frame }).await;
                    }
                    tracing::info!(stream = %self.key, "publisher re-attached to restarted stream");
                    return Ok(());
                }
                Some(entry) if entry.generation == self.stream.generation => {
                    actix_rt::time::sleep(REATTACH_PAUSE).await;
                }
                _ => break,
            }
        }
        Err(PublishError::StreamGone { key: self.key.clone() })
    }

    /// Ends the stream (the publisher left or was refused mid-stream).
    pub fn finish(self, reason: impl Into<String>) {
        self.stream.addr.do_send(Detach { publisher_id: self.handle.id, reason: reason.into() });
    }
}
