//! Outputs asked for by name, per stream (see [`crate::output`]'s "On request"): the
//! choices made before a stream starts, what a request did, and the stream actor's handle
//! on the node's outputs.
//!
//! # Where it sits
//! At the bottom of the crate: the stream actor (which answers
//! [`crate::stream::SetOutput`]) and the outputs (which run the sessions, and so know the
//! directory and thus the stream actor) both use it, neither through the other.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::key::StreamKey;

/// Choices of outputs by name for one stream, made before it starts (what a publish
/// decider answered): `true` opens the output with [`crate::OutputStream::requested`] set, `false`
/// keeps it off for this stream. Outputs not named follow their own rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputChoices(Vec<(String, bool)>);

impl OutputChoices {
    /// Chooses `on` for the output `name` (a later choice replaces an earlier one).
    pub fn set(&mut self, name: &str, on: bool) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(choice) => choice.1 = on,
            None => self.0.push((name.to_owned(), on)),
        }
    }

    /// The choice made for the output `name`, if any.
    pub fn get(&self, name: &str) -> Option<bool> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, on)| *on)
    }

    /// Whether nothing was chosen.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a request to start or stop an output of a live stream did (the answer of
/// [`crate::stream::SetOutput`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputChange {
    /// It was not running and now runs.
    Started,
    /// It was running already.
    AlreadyRunning,
    /// It was running and is stopping.
    Stopped,
    /// It was not running.
    NotRunning,
    /// It declined this stream (a relayed copy, or it could not start; its log says why).
    Declined,
    /// This node has no output of that name (a recorder on a node where recording is
    /// off, say).
    NoSuchOutput,
}

/// How the stream actor reaches the node's outputs: starts (`on`) or stops the output named
/// `name` for the stream `key`, a relayed copy when `replica`.
pub type OutputControl = Arc<dyn Fn(&StreamKey, &str, bool, bool) -> OutputChange + Send + Sync>;
