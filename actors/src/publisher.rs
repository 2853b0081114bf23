//! [`StreamPublisher`]: a publisher connection's side of its stream, for every ingest
//! protocol. It starts the stream through the supervisor, runs the stream's frame path
//! ([`crate::stream::Ingest`]) on its own task, and, if the stream actor crashes and is
//! restarted, attaches to the new instance and replays the codec headers so viewers can
//! decode again. Dropped without [`StreamPublisher::finish`] (its connection's task
//! panicked), it still ends the stream.

use std::net::SocketAddr;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc;

use crate::key::StreamKey;
use crate::stream::{Attach, Detach, PublisherCommand, PublisherHandle, StreamError};
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
    /// Whether the stream was told the publisher left.
    detached: bool,
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
            detached: false,
        };
        Ok((publisher, commands))
    }

    /// The stream's name.
    pub fn key(&self) -> &StreamKey {
        &self.key
    }

    /// Pushes one frame into the stream. Never waits, except to re-attach after the stream
    /// actor crashed.
    pub async fn push(&mut self, frame: MediaFrame) -> Result<(), PublishError> {
        match (frame.kind, frame.sequence_header) {
            (FrameKind::Data, _) => self.metadata = Some(frame.clone()),
            (FrameKind::Video, true) => self.video_header = Some(frame.clone()),
            (FrameKind::Audio, true) => self.audio_header = Some(frame.clone()),
            _ => {}
        }
        if let Err(frame) = self.stream.ingest.push(frame) {
            // The actor is gone: crashed (a restarted instance follows) or ended.
            self.reattach().await?;
            // A second refusal means the new instance is gone too: the next frame retries.
            let _ = self.stream.ingest.push(frame);
        }
        Ok(())
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
                        let _ = self.stream.ingest.push(frame);
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
    pub fn finish(mut self, reason: impl Into<String>) {
        self.detach(reason.into());
    }

    fn detach(&mut self, reason: String) {
        if !std::mem::replace(&mut self.detached, true) {
            self.stream.addr.do_send(Detach { publisher_id: self.handle.id, reason });
        }
    }
}

impl Drop for StreamPublisher {
    fn drop(&mut self) {
        self.detach("publisher gone".to_owned());
    }
}
