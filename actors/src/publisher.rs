//! [`StreamPublisher`]: a publisher connection's side of its stream, for every ingest
//! protocol. It starts the stream through the supervisor, runs the stream's frame path
//! ([`crate::stream::Ingest`]) on its own task, and, if the stream actor crashes and is
//! restarted, attaches to the new instance (the frames carry their codec configurations,
//! and the metadata is replayed). Dropped without [`StreamPublisher::finish`] (its connection's task
//! panicked), it still ends the stream.

use std::net::SocketAddr;

use actix::prelude::*;
use tokio::sync::mpsc;
use zenlive_media::{CodecConfig, FrameKind, MediaFrame, MediaTime};

use crate::directory::{Directory, StreamEntry};
use crate::key::StreamKey;
use crate::output_request::OutputChoices;
use crate::protocol::Protocol;
use crate::stream::{
    Attach, Detach, IngestFailed, PublisherCommand, PublisherHandle, Refused, StreamError,
};
use crate::supervisor::{StartError, StartStream, StreamSupervisor};
use crate::viewer::{next_connection_id, RESTART_WAIT};

/// Keeps a stream's timestamps growing when its source changes (a relay following a new
/// origin, a local publisher taking over a relayed copy): frames of the new source are
/// shifted to follow the last frame before it. The first audio or video frame of a source
/// sets the shift; script data before it passes as it is.
#[derive(Debug, Default)]
pub struct Rebase {
    last_out: Option<MediaTime>,
    offset: Option<MediaTime>,
}

/// The gap left between two sources: about one video frame.
const SOURCE_GAP: MediaTime = MediaTime::from_millis(33);

impl Rebase {
    /// A rebase whose first source continues after `last` (nothing before: as is).
    pub fn after(last: Option<MediaTime>) -> Self {
        Self { last_out: last, offset: None }
    }

    /// The next frame comes from a new source.
    pub fn new_source(&mut self) {
        self.offset = None;
    }

    /// `frame` of the current source, shifted.
    pub fn apply(&mut self, frame: MediaFrame) -> MediaFrame {
        if frame.kind() == FrameKind::Data {
            return match self.offset {
                Some(offset) => frame.shifted(offset),
                None => frame,
            };
        }
        let offset = *self.offset.get_or_insert_with(|| match self.last_out {
            Some(last) => last + SOURCE_GAP - frame.dts(),
            None => MediaTime::ZERO,
        });
        let out = frame.shifted(offset);
        self.last_out = Some(out.dts());
        out
    }
}

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
    /// Set when this publisher took over a relayed copy: its frames continue the copy's
    /// timestamps.
    rebase: Option<Rebase>,
    /// Whether the stream was told the publisher left.
    detached: bool,
}

/// Whose stream a publisher starts.
enum Role {
    /// Its own, with these outputs chosen.
    Owner(OutputChoices),
    /// A local copy of another node's.
    Replica,
}

impl StreamPublisher {
    /// Starts `key` for a publisher connected over `protocol` from `peer` as `user` (the
    /// token's subject, when auth identified one), on the current arbiter, with `outputs`
    /// chosen on or off for it (what the publish deciders answered). Returns the publisher
    /// and the receiver of commands for its connection.
    pub async fn start(
        supervisor: &Addr<StreamSupervisor>,
        directory: Directory,
        key: StreamKey,
        protocol: Protocol,
        peer: Option<SocketAddr>,
        user: Option<String>,
        outputs: OutputChoices,
    ) -> Result<(Self, mpsc::Receiver<PublisherCommand>), PublishError> {
        let role = Role::Owner(outputs);
        Self::start_as(supervisor, directory, key, protocol, peer, user, role).await
    }

    /// Starts a local copy of `key`, a stream another node owns (an edge relay): like
    /// [`StreamPublisher::start`], but no name is claimed in the registry.
    pub async fn start_replica(
        supervisor: &Addr<StreamSupervisor>,
        directory: Directory,
        key: StreamKey,
        peer: Option<SocketAddr>,
    ) -> Result<(Self, mpsc::Receiver<PublisherCommand>), PublishError> {
        Self::start_as(supervisor, directory, key, Protocol::Relay, peer, None, Role::Replica).await
    }

    async fn start_as(
        supervisor: &Addr<StreamSupervisor>,
        directory: Directory,
        key: StreamKey,
        protocol: Protocol,
        peer: Option<SocketAddr>,
        user: Option<String>,
        role: Role,
    ) -> Result<(Self, mpsc::Receiver<PublisherCommand>), PublishError> {
        let (control, commands) = mpsc::channel(4);
        let handle = PublisherHandle { id: next_connection_id(), protocol, peer, user, control };
        let (replica, outputs) = match role {
            Role::Owner(outputs) => (false, outputs),
            Role::Replica => (true, OutputChoices::default()),
        };
        let start = StartStream {
            key: key.clone(),
            publisher: handle.clone(),
            arbiter: actix_rt::Arbiter::current(),
            replica,
            outputs,
        };
        let started = supervisor.send(start).await.map_err(|_| StartError::ShuttingDown)??;
        let publisher = Self {
            key,
            handle,
            stream: started.entry,
            directory,
            metadata: None,
            rebase: started.took_over.then(|| Rebase::after(started.continue_after)),
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
    pub async fn push(&mut self, mut frame: MediaFrame) -> Result<(), PublishError> {
        if let Some(rebase) = &mut self.rebase {
            frame = rebase.apply(frame);
        }
        // Metadata is replayed into a restarted instance, once it went in without harm.
        let metadata = (frame.kind() == FrameKind::Data).then(|| frame.clone());
        match self.stream.ingest.push(frame) {
            Ok(()) => {
                if metadata.is_some() {
                    self.metadata = metadata;
                }
                Ok(())
            }
            Err(Refused::Closed(frame)) => {
                // The actor is gone: crashed (a restarted instance follows) or ended.
                self.reattach().await?;
                // A second refusal means the new instance is gone too: the next frame retries.
                let _ = self.stream.ingest.push(frame);
                Ok(())
            }
            Err(Refused::Crashed) => {
                // The frame path panicked on that frame (lost): restart the stream and carry
                // on in the new instance.
                self.stream.addr.do_send(IngestFailed);
                self.reattach().await
            }
        }
    }

    /// A track's codec configuration from now on (the publisher sent a sequence header).
    /// Frames that use it carry it too; this makes it known before the first of them.
    pub fn set_config(&mut self, config: &CodecConfig) {
        self.stream.ingest.set_config(config);
    }

    async fn reattach(&mut self) -> Result<(), PublishError> {
        let (key, generation) = (&self.key, self.stream.generation);
        let next = self.directory.next_instance(key, generation, RESTART_WAIT).await;
        let entry = match next {
            Some(entry)
                if entry.lineage == self.stream.lineage && entry.generation != generation =>
            {
                entry
            }
            _ => return Err(PublishError::StreamGone { key: key.clone() }),
        };
        match entry.addr.send(Attach { publisher: self.handle.clone() }).await {
            Ok(Ok(())) => {}
            Ok(Err(StreamError::AlreadyPublishing { .. })) | Err(_) => {
                return Err(PublishError::StreamGone { key: self.key.clone() })
            }
        }
        self.stream = entry;
        // Codec configurations travel with the frames; metadata is replayed.
        if let Some(metadata) = self.metadata.clone() {
            let _ = self.stream.ingest.push(metadata);
        }
        tracing::info!(stream = %self.key, "publisher re-attached to restarted stream");
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn audio(ms: i64) -> MediaFrame {
        MediaFrame::audio(
            zenlive_media::Codec::Aac,
            MediaTime::from_millis(ms),
            bytes::Bytes::new(),
            None,
        )
    }

    fn rebased(rebase: &mut Rebase, ms: i64) -> i64 {
        rebase.apply(audio(ms)).dts().as_millis()
    }

    #[test]
    fn rebasing_keeps_timestamps_growing_across_origins() {
        let mut rebase = Rebase::default();
        assert_eq!(rebased(&mut rebase, 1000), 1000, "the first origin is relayed as is");
        assert_eq!(rebased(&mut rebase, 1040), 1040);
        rebase.new_source();
        let meta = MediaFrame::data(MediaTime::ZERO, bytes::Bytes::new());
        assert_eq!(rebase.apply(meta).dts(), MediaTime::ZERO, "script data does not set the shift");
        assert_eq!(rebased(&mut rebase, 0), 1073, "a new origin continues one frame later");
        assert_eq!(rebased(&mut rebase, 40), 1113);
        rebase.new_source();
        assert_eq!(rebased(&mut rebase, 5_000_000_000), 1146);
        let mut takeover = Rebase::after(Some(MediaTime::from_millis(50_000)));
        assert_eq!(rebased(&mut takeover, 0), 50_033, "a publisher taking over continues");
        assert_eq!(rebased(&mut Rebase::after(None), 7), 7);
    }
}
