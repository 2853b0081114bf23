//! A minimal RTMP client over tokio around rml_rtmp's `ClientSession`: connect, handshake,
//! `connect` the app, then publish or play.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long connecting and the RTMP conversation before media may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);

/// `rtmp://host:port/app/key` split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtmpUrl {
    /// `host:port`
    pub addr: String,
    /// The application.
    pub app: String,
    /// The stream key.
    pub key: String,
}

impl RtmpUrl {
    /// Parses an `rtmp://` URL (port 1935 when absent).
    pub fn parse(url: &str) -> Result<Self> {
        let rest =
            url.strip_prefix("rtmp://").ok_or_else(|| anyhow!("not an rtmp:// URL: {url}"))?;
        let (host, path) = rest.split_once('/').ok_or_else(|| anyhow!("no app in {url}"))?;
        let (app, key) = path.split_once('/').ok_or_else(|| anyhow!("no stream key in {url}"))?;
        let addr = if host.contains(':') { host.to_owned() } else { format!("{host}:1935") };
        Ok(Self { addr, app: app.to_owned(), key: key.to_owned() })
    }
}

/// A connected RTMP client session.
pub struct Client {
    /// The socket.
    pub stream: TcpStream,
    /// The session state.
    pub session: ClientSession,
    buf: Vec<u8>,
}

impl Client {
    /// Connects, handshakes and connects to the app.
    pub async fn connect(url: &RtmpUrl) -> Result<Self> {
        tokio::time::timeout(SETUP_TIMEOUT, Self::connect_inner(url))
            .await
            .context("rtmp setup timed out")?
    }

    async fn connect_inner(url: &RtmpUrl) -> Result<Self> {
        let mut stream = TcpStream::connect(&url.addr).await.context("tcp connect")?;
        stream.set_nodelay(true)?;
        let mut handshake = Handshake::new(PeerType::Client);
        stream
            .write_all(&handshake.generate_outbound_p0_and_p1().map_err(|e| anyhow!("{e:?}"))?)
            .await?;
        let mut buf = vec![0u8; 64 * 1024];
        let leftover = loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                bail!("closed during handshake");
            }
            match handshake.process_bytes(&buf[..n]).map_err(|e| anyhow!("handshake: {e:?}"))? {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    stream.write_all(&response_bytes).await?
                }
                HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                    stream.write_all(&response_bytes).await?;
                    break remaining_bytes;
                }
            }
        };
        let (session, results) =
            ClientSession::new(ClientSessionConfig::new()).map_err(|e| anyhow!("{e:?}"))?;
        let mut client = Self { stream, session, buf };
        client.send(results).await?;
        if !leftover.is_empty() {
            let results = client.session.handle_input(&leftover).map_err(|e| anyhow!("{e:?}"))?;
            client.send(results).await?;
        }
        let request =
            client.session.request_connection(url.app.clone()).map_err(|e| anyhow!("{e:?}"))?;
        client.send(vec![request]).await?;
        client.until(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted)).await?;
        Ok(client)
    }

    /// Writes outbound packets; returns raised events.
    pub async fn send(
        &mut self,
        results: Vec<ClientSessionResult>,
    ) -> Result<Vec<ClientSessionEvent>> {
        let mut events = Vec::new();
        for result in results {
            match result {
                ClientSessionResult::OutboundResponse(packet) => {
                    self.stream.write_all(&packet.bytes).await?
                }
                ClientSessionResult::RaisedEvent(event) => events.push(event),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(events)
    }

    /// Reads one batch from the socket, answers what needs answering, returns events.
    pub async fn read_events(&mut self) -> Result<(usize, Vec<ClientSessionEvent>)> {
        let n = self.stream.read(&mut self.buf).await?;
        if n == 0 {
            bail!("server closed the connection");
        }
        let results =
            self.session.handle_input(&self.buf[..n]).map_err(|e| anyhow!("rtmp: {e:?}"))?;
        Ok((n, self.send(results).await?))
    }

    /// Reads until an event matching `wanted`; fails on a rejection. Returns the events
    /// that arrived after it in the same read (media may follow an answer at once).
    pub async fn until(
        &mut self,
        wanted: fn(&ClientSessionEvent) -> bool,
    ) -> Result<Vec<ClientSessionEvent>> {
        loop {
            let mut events = self.read_events().await?.1.into_iter();
            while let Some(event) = events.next() {
                if wanted(&event) {
                    return Ok(events.collect());
                }
                if let ClientSessionEvent::ConnectionRequestRejected { description } = &event {
                    bail!("rejected: {description}");
                }
                if let ClientSessionEvent::UnhandleableOnStatusCode { code } = &event {
                    if code.contains("Failed")
                        || code.contains("BadName")
                        || code.contains("NotFound")
                    {
                        bail!("refused: {code}");
                    }
                }
            }
        }
    }

    /// Asks to publish `key` and waits for the answer.
    pub async fn publish(&mut self, key: &str) -> Result<Vec<ClientSessionEvent>> {
        let request = self
            .session
            .request_publishing(key.to_owned(), rml_rtmp::sessions::PublishRequestType::Live)
            .map_err(|e| anyhow!("{e:?}"))?;
        self.send(vec![request]).await?;
        tokio::time::timeout(
            SETUP_TIMEOUT,
            self.until(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted)),
        )
        .await
        .context("publish not accepted in time")?
    }

    /// Asks to play `key` and waits for the answer; returns media events that came with it.
    pub async fn play(&mut self, key: &str) -> Result<Vec<ClientSessionEvent>> {
        let request =
            self.session.request_playback(key.to_owned()).map_err(|e| anyhow!("{e:?}"))?;
        self.send(vec![request]).await?;
        tokio::time::timeout(
            SETUP_TIMEOUT,
            self.until(|e| matches!(e, ClientSessionEvent::PlaybackRequestAccepted)),
        )
        .await
        .context("play not accepted in time")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let url = RtmpUrl::parse("rtmp://127.0.0.1:1936/live/a-1").expect("valid");
        assert_eq!(
            url,
            RtmpUrl { addr: "127.0.0.1:1936".into(), app: "live".into(), key: "a-1".into() }
        );
        assert_eq!(RtmpUrl::parse("rtmp://h/live/k").expect("valid").addr, "h:1935");
        assert!(RtmpUrl::parse("http://h/live/k").is_err());
        assert!(RtmpUrl::parse("rtmp://h/live").is_err());
    }
}
