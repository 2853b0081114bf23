//! LL-HLS blocking reloads under load: `count` clients each hold a blocking playlist
//! request (`_HLS_msn`/`_HLS_part`) for the same coming part, round after round, and the
//! summary says how long after the first answer of a round the others came, which is what
//! a server that wakes every waiter at once should keep small.
//!
//! Each round reads the playlist, takes its preload hint (`{msn}.{part}`) and asks for the
//! part after it (a part or more away, so every request is waiting before it completes);
//! a request sent after the round's first answer came would be answered at once, not woken,
//! and is counted as late instead of measured.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::stats::Tail;

/// What the run measured.
#[derive(Debug, Serialize)]
pub struct LlhlsSummary {
    /// Clients blocked in each round.
    pub clients: usize,
    /// Rounds run.
    pub rounds: usize,
    /// Answers with status 200, all rounds.
    pub answered: usize,
    /// Requests sent after their round's first answer (not measured).
    pub late: usize,
    /// Milliseconds from a round's first answer to each other answer.
    pub after_first_ms: Option<Tail>,
    /// Milliseconds each request waited (from its sending to its answer).
    pub waited_ms: Option<Tail>,
    /// Failed requests by kind.
    pub errors: std::collections::BTreeMap<String, usize>,
}

/// The `(msn, part)` of `playlist`'s preload hint.
pub fn preload_hint(playlist: &str) -> Option<(u64, u64)> {
    let uri =
        playlist.lines().find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))?;
    let name = uri.split(".m4s").next()?;
    let name = name.rsplit('/').next()?;
    let (msn, part) = name.split_once('.')?;
    Some((msn.parse().ok()?, part.parse().ok()?))
}

/// Runs `rounds` rounds of `count` blocked clients against the LL playlist `url`.
pub async fn run(url: &str, count: usize, rounds: usize) -> Result<LlhlsSummary> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(count + 1)
        .timeout(Duration::from_secs(30))
        .build()
        .context("HTTP client")?;
    let separator = if url.contains('?') { '&' } else { '?' };
    let mut summary = LlhlsSummary {
        clients: count,
        rounds,
        answered: 0,
        late: 0,
        after_first_ms: None,
        waited_ms: None,
        errors: Default::default(),
    };
    let (mut after_first, mut waited) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let playlist = client.get(url).send().await.context("playlist")?;
        if !playlist.status().is_success() {
            bail!("the playlist answered {}", playlist.status());
        }
        let text = playlist.text().await.context("playlist body")?;
        let Some((msn, part)) = preload_hint(&text) else {
            bail!("no preload hint in the playlist (has the stream ended?)");
        };
        let target = format!("{url}{separator}_HLS_msn={msn}&_HLS_part={}", part + 1);
        let mut tasks = JoinSet::new();
        for _ in 0..count {
            let request = client.get(&target);
            tasks.spawn(async move {
                let sent = Instant::now();
                let response = request.send().await?;
                let status = response.status();
                response.bytes().await?;
                anyhow::Ok((sent, Instant::now(), status))
            });
        }
        let mut answers = Vec::with_capacity(count);
        while let Some(joined) = tasks.join_next().await {
            match joined.context("client task")? {
                Ok((sent, at, status)) if status.is_success() => answers.push((sent, at)),
                Ok((_, _, status)) => *summary.errors.entry(status.to_string()).or_insert(0) += 1,
                Err(error) => *summary.errors.entry(crate::error_kind(&error)).or_insert(0) += 1,
            }
        }
        let Some(first) = answers.iter().map(|(_, at)| *at).min() else { continue };
        summary.answered += answers.len();
        for (sent, at) in answers {
            if sent >= first {
                summary.late += 1;
                continue;
            }
            after_first.push((at - first).as_secs_f64() * 1000.0);
            waited.push((at - sent).as_secs_f64() * 1000.0);
        }
        eprintln!("zenlive-swarm: round {} of {rounds} done", round + 1);
    }
    summary.after_first_ms = Tail::of(after_first);
    summary.waited_ms = Tail::of(waited);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preload_hint_is_read() {
        let playlist = "#EXTM3U\n#EXT-X-PART:DURATION=0.333,URI=\"ll/4.1.m4s\"\n\
                        #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"ll/4.2.m4s?s=abc\"\n";
        assert_eq!(preload_hint(playlist), Some((4, 2)));
        assert_eq!(preload_hint("#EXTM3U\n#EXT-X-ENDLIST\n"), None);
        assert_eq!(preload_hint("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"x.m4s\""), None);
    }
}
