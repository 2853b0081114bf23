//! Headless Chromium driven over the DevTools protocol (a WebSocket, JSON commands), with
//! no WebDriver: open a tab, run JavaScript in it, wait for a condition the page reaches,
//! resize it and take screenshots. One browser process per [`Browser`], killed on drop.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long one DevTools command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A headless Chromium and the DevTools connection to it.
pub struct Browser {
    _child: Child,
    _profile: tempfile::TempDir,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

/// One tab, by its DevTools session.
#[derive(Clone)]
pub struct Tab {
    session: String,
}

impl Browser {
    /// Starts `/usr/bin/chromium` headless on a free DevTools port and connects to it.
    pub async fn start() -> Self {
        let found = std::process::Command::new("chromium").arg("--version").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "chromium is required for this test: run scripts/test, which installs it"
        );
        let profile = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new("chromium")
            .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"])
            .args(["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
            // WebRTC to the node on 127.0.0.1 (Chromium leaves loopback candidates out).
            .arg("--allow-loopback-in-peer-connection")
            .args(["--autoplay-policy=no-user-gesture-required", "--mute-audio"])
            .args(["--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn chromium");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.expect("read chromium's stderr") {
                if let Some(at) = line.find("ws://") {
                    return line[at..].trim().to_owned();
                }
            }
            panic!("chromium exited before it printed its DevTools address");
        })
        .await
        .expect("chromium printed its DevTools address in time");
        // Keep draining stderr so chromium never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (socket, _) = tokio_tungstenite::connect_async(&url).await.expect("DevTools connect");
        Self { _child: child, _profile: profile, socket, next_id: 0 }
    }

    /// Sends `method` (to `tab`'s session, or the browser) and answers its result; panics
    /// on a protocol error.
    pub async fn call(&mut self, tab: Option<&Tab>, method: &str, params: Value) -> Value {
        let answer = self.try_call(tab, method, params).await;
        answer.unwrap_or_else(|error| panic!("{method}: {error}"))
    }

    /// Like [`Browser::call`], with a protocol error as the `Err` (the whole answer).
    pub async fn try_call(
        &mut self,
        tab: Option<&Tab>,
        method: &str,
        params: Value,
    ) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(tab) = tab {
            command["sessionId"] = json!(tab.session);
        }
        self.socket.send(Message::text(command.to_string())).await.expect("DevTools send");
        let answer = tokio::time::timeout(COMMAND_TIMEOUT, async {
            loop {
                let message = self.socket.next().await.expect("DevTools open").expect("read");
                let Message::Text(text) = message else { continue };
                let value: Value = serde_json::from_str(&text).expect("DevTools JSON");
                // Events (no id) and other answers are not waited for.
                if value["id"].as_u64() == Some(id) {
                    return value;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no answer to {method} in time"));
        if answer.get("error").is_some() {
            return Err(answer);
        }
        Ok(answer["result"].clone())
    }

    /// Opens `url` in a new tab (its own session storage) of `width`×`height` CSS pixels.
    pub async fn open(&mut self, url: &str, width: u32, height: u32) -> Tab {
        let target = self.call(None, "Target.createTarget", json!({ "url": "about:blank" })).await;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        let tab = Tab { session: attached["sessionId"].as_str().expect("session").to_owned() };
        self.resize(&tab, width, height).await;
        self.call(Some(&tab), "Page.enable", json!({})).await;
        self.call(Some(&tab), "Page.navigate", json!({ "url": url })).await;
        tab
    }

    /// Gives `tab` a viewport of `width`×`height` (a phone's when narrow).
    pub async fn resize(&mut self, tab: &Tab, width: u32, height: u32) {
        let params = json!({
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600,
        });
        self.call(Some(tab), "Emulation.setDeviceMetricsOverride", params).await;
    }

    /// The value of the JavaScript `expression` in `tab` (promises awaited); panics when it
    /// throws.
    pub async fn eval(&mut self, tab: &Tab, expression: &str) -> Value {
        let params = json!({
            "expression": expression, "returnByValue": true, "awaitPromise": true,
        });
        let result = self.call(Some(tab), "Runtime.evaluate", params).await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression} threw: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is `true` in `tab`; after `limit` panics with `what` and the
    /// value of `explain` (an expression that shows the page's state).
    pub async fn wait(
        &mut self,
        tab: &Tab,
        what: &str,
        limit: Duration,
        expression: &str,
        explain: &str,
    ) {
        let deadline = tokio::time::Instant::now() + limit;
        // Until the page has loaded, the expression may throw: that counts as not yet.
        let guarded = format!("(() => {{ try {{ return ({expression}) === true; }} catch (e) {{ return false; }} }})()");
        loop {
            // A page that navigates meanwhile (a form, a redirect) ends the evaluation with
            // a protocol error: that counts as not yet too.
            let params = json!({ "expression": guarded, "returnByValue": true });
            let answer = self.try_call(Some(tab), "Runtime.evaluate", params).await;
            if answer.is_ok_and(|result| result["result"]["value"] == Value::Bool(true)) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let state = self.eval(tab, explain).await;
                panic!("timed out waiting for {what}; the page shows: {state}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits (60 s at most) until the watch page in `tab` plays over WebRTC (WHEP) with more
    /// than 30 frames decoded; `what` names it in the failure, which shows the player's
    /// statistics.
    pub async fn wait_playing_whep(&mut self, tab: &Tab, what: &str) {
        let stats = "document.querySelector('#player-stats')";
        let playing =
            format!("{stats}.dataset.protocol === 'whep' && Number({stats}.dataset.frames) > 30");
        let state = format!("JSON.stringify({{...{stats}.dataset, text: {stats}.innerText}})");
        self.wait(tab, what, Duration::from_secs(60), &playing, &state).await;
    }

    /// Saves a PNG of `tab` at `width`×`height` as `path`.
    pub async fn screenshot(&mut self, tab: &Tab, width: u32, height: u32, path: &Path) {
        self.resize(tab, width, height).await;
        let shot = self.call(Some(tab), "Page.captureScreenshot", json!({ "format": "png" })).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("PNG data"))
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).expect("write the screenshot");
    }
}
