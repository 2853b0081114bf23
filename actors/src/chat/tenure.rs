//! A room instance's [`Tenure`] over its name on this node, and the [`Predecessor`] handle
//! the next instance of the name waits on.
//!
//! One instance of a room runs per name on this node. When a room stops (idle, handed off,
//! crashed) and the name is wanted again, the new instance waits for the old one's tenure
//! to end (its lease released, or never taken) before it claims the name: a watch channel,
//! not a poll, so the claim never finds this node's own lease in its way.

use tokio::sync::watch;

/// A room instance's hold on its name on this node, from its start until its lease is
/// released (or it never got one). Dropping it lets the next instance claim.
pub(super) struct Tenure {
    _hold: watch::Sender<()>,
}

/// The other end of a previous instance's [`Tenure`]: resolves when it ends.
#[derive(Clone)]
pub(super) struct Predecessor(watch::Receiver<()>);

impl Predecessor {
    /// Waits until the previous instance has let the name go.
    pub(super) async fn wait(mut self) {
        // `changed` fails once the tenure (the sender) is dropped.
        while self.0.changed().await.is_ok() {}
    }

    /// Whether the previous instance has let the name go already.
    pub(super) fn is_done(&self) -> bool {
        self.0.has_changed().is_err()
    }
}

/// A new tenure and the handle its successor waits on.
pub(super) fn tenure() -> (Tenure, Predecessor) {
    let (hold, watch) = watch::channel(());
    (Tenure { _hold: hold }, Predecessor(watch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_predecessor_resolves_when_its_tenure_ends() {
        let (hold, predecessor) = tenure();
        assert!(!predecessor.is_done());
        let waiting = tokio::spawn(predecessor.clone().wait());
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(hold);
        waiting.await.expect("resolves");
        assert!(predecessor.is_done());
    }
}
