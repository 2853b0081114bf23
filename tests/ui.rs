//! The web pages in a real browser: headless Chromium (driven over the DevTools protocol,
//! `tests/common/cdp.rs`, with a fake camera and microphone and WebRTC allowed on loopback)
//! against a node on loopback with FFmpeg publishing over RTMP. The home page lists the
//! stream; the watch page plays it over WebRTC (WHEP) first (frames decoded and advancing,
//! the browser's statistics, the RTMP stream's sound transcoded to Opus), then over
//! HLS when the viewer picks it (an audio level above zero), then LL-HLS (hls.js through
//! Media Source Extensions: frames advancing, its latency reported), and chats with a WebSocket
//! member started here, markup shown as text; the console lists the stream, turns its
//! recording on and off and kicks it, and says so when the node refuses its calls. The
//! go-live page publishes the fake camera over WHIP with a token from its address (FFmpeg
//! reads H.264 + AAC back over RTMP and HLS, the console lists it beside an FFmpeg stream,
//! the watch page plays it over WebRTC with sound, Stop ends it) and says in words why the node refused it without one. The watch page falls
//! back to the browser's own HLS player on a node without WebRTC and LL-HLS, and to LL-HLS
//! when WebRTC does not connect. Screenshots of
//! each page at desktop and phone sizes go to `target/tmp/process-logs/ui/` (kept, not
//! compared). Hostile paths and the headers are checked with plain HTTP.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use common::cdp::{Browser, Tab};
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use zenlive::auth::Role;
use zenlive::{Config, Node, StreamKey};

const SECRET: &str = "ui-test-secret-ui-test-secret-ui-test";
const DESKTOP: (u32, u32) = (1280, 800);
const PHONE: (u32, u32) = (390, 844);
/// How long a page may take to reach a state (a stream going live, HLS starting).
const PAGE_LIMIT: Duration = Duration::from_secs(60);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn config() -> Config {
    let mut config = test_config();
    config.auth.jwt_secret = SECRET.to_owned();
    config.ui.title = "Test <TV>".to_owned();
    config
}

fn token(sub: &str, name: Option<&str>, roles: &[Role]) -> String {
    mint_token(SECRET, sub, name, roles)
}

fn shots() -> PathBuf {
    let dir = log_dir().join("ui");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// Screenshots of `tab` at desktop and phone sizes, as `{name}-desktop.png` and
/// `{name}-phone.png`; the tab is left at desktop size.
async fn screenshots(browser: &mut Browser, tab: &Tab, name: &str) {
    let dir = shots();
    browser.screenshot(tab, PHONE.0, PHONE.1, &dir.join(format!("{name}-phone.png"))).await;
    browser.screenshot(tab, DESKTOP.0, DESKTOP.1, &dir.join(format!("{name}-desktop.png"))).await;
}

/// Waits until `key` is live (longer than `wait_live`: a browser shares the machine).
async fn live(node: &Node, key: &StreamKey) {
    wait_for(&format!("{key} to go live"), PAGE_LIMIT, || node.stream(key).is_some()).await;
}

async fn chat_member(node: &Node, token: &str) -> Socket {
    let url = format!("ws://{}/chat/live/show?token={token}", node.http_addr());
    let (socket, _) = tokio_tungstenite::connect_async(url).await.expect("WebSocket connects");
    socket
}

/// The next chat event of `kind` on `socket`, within 20 s.
async fn next_of(socket: &mut Socket, kind: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let frame = tokio::time::timeout_at(deadline, socket.next())
            .await
            .unwrap_or_else(|_| panic!("a {kind} event in time"))
            .expect("the socket stays open")
            .expect("a frame");
        if let Message::Text(text) = frame {
            let event: Value = serde_json::from_str(&text).expect("JSON event");
            if event["type"] == kind {
                return event;
            }
        }
    }
}

async fn say(socket: &mut Socket, text: &str) -> u64 {
    let command = json!({ "type": "message", "text": text, "client_id": "t" });
    socket.send(Message::text(command.to_string())).await.expect("send");
    next_of(socket, "ack").await["id"].as_u64().expect("id")
}

/// A JavaScript string literal of `text`.
fn js(text: &str) -> String {
    serde_json::to_string(text).expect("string")
}

const PAGE_STATE: &str = "document.body ? document.body.innerText.slice(0, 2000) : 'no body'";

/// The watch page's statistics list, whose `data-` attributes say what plays.
const STATS: &str = "document.querySelector('#player-stats')";

/// What the watch page's player shows: the protocol, frames, status lines, statistics.
const PLAYER_STATE: &str = "JSON.stringify({ protocol: document.querySelector('#player-stats').dataset.protocol, \
     frames: document.querySelector('#player-stats').dataset.frames, \
     status: document.querySelector('#player-status').textContent, \
     note: document.querySelector('#player-note').textContent, \
     stats: document.querySelector('#player-stats').innerText, \
     error: document.querySelector('#video').error && document.querySelector('#video').error.message })";

#[actix_rt::test]
async fn the_pages_list_play_chat_and_administer_a_live_stream() {
    let recordings = tempfile::tempdir().expect("tempdir");
    let mut config = config();
    config.recording.enabled = true;
    config.recording.auto = false;
    config.recording.segment_duration = Duration::from_secs(1);
    config.storage.base_path = recordings.path().to_str().expect("utf-8").to_owned();
    let node = start_node(config).await;
    let key = StreamKey::new("live", "show").expect("name");
    let mut publisher = publish_looped(&rtmp_url(&node, "show"));
    live(&node, &key).await;
    let mut browser = Browser::start().await;
    let base = http_url(&node, "");

    // Home: the stream, with its resolution, refreshed until it shows up.
    let home = browser.open(&format!("{base}/"), DESKTOP.0, DESKTOP.1).await;
    browser
        .wait(
            &home,
            "the home page to list live/show with its resolution",
            PAGE_LIMIT,
            "(() => { const row = document.querySelector('tr[data-stream=\"live/show\"]'); \
             return !!row && /\\d+×\\d+/.test(row.innerText) && /b\\/s/.test(row.innerText); })()",
            PAGE_STATE,
        )
        .await;
    let title = browser.eval(&home, "document.title").await;
    assert_eq!(title, "Test <TV>", "the title is shown as text");
    assert_eq!(browser.eval(&home, "document.querySelector('#token-form').hidden").await, false);
    screenshots(&mut browser, &home, "home").await;
    // The form opens a stream's watch page.
    browser
        .eval(
            &home,
            "document.querySelector('#pick-key').value = 'show'; \
             document.querySelector('#pick').requestSubmit(); true",
        )
        .await;
    browser
        .wait(
            &home,
            "the form to open the watch page",
            PAGE_LIMIT,
            "location.pathname === '/watch/live/show'",
            "location.href",
        )
        .await;

    // A member who posted before the viewer joined: the viewer gets it in the history.
    let bob = token("bob", Some("Bob"), &[Role::Viewer]);
    let mut early = chat_member(&node, &bob).await;
    say(&mut early, "hello from before").await;
    drop(early);

    // Watch, with a moderator's token in the address, which the page takes off it.
    let ann = token("ann", Some("Ann"), &[Role::Moderator]);
    let watch =
        browser.open(&format!("{base}/watch/live/show?token={ann}"), DESKTOP.0, DESKTOP.1).await;
    browser
        .wait(
            &watch,
            "the chat history",
            PAGE_LIMIT,
            "document.querySelector('#chat-log').innerText.includes('hello from before')",
            PAGE_STATE,
        )
        .await;
    assert_eq!(browser.eval(&watch, "location.search").await, "");
    assert_eq!(browser.eval(&watch, "sessionStorage.getItem('zenlive.token')").await, ann.as_str());
    assert_eq!(
        browser.eval(&watch, "document.querySelector('#chat-tools').hidden").await,
        false,
        "a moderator sees the moderation tools"
    );

    // The page and a WebSocket member exchange messages.
    let mut member = chat_member(&node, &bob).await;
    next_of(&mut member, "history").await;
    browser
        .eval(
            &watch,
            "document.querySelector('#chat-input').value = 'hi from the browser'; \
             document.querySelector('#chat-form').requestSubmit(); true",
        )
        .await;
    let heard = next_of(&mut member, "message").await;
    assert_eq!(heard["text"], "hi from the browser", "{heard}");
    assert_eq!(heard["user"]["name"], "Ann", "{heard}");

    // Markup from a member is shown as text, never run or rendered.
    let hostile =
        "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\"> <b>bold</b>";
    let hostile_id = say(&mut member, hostile).await;
    browser
        .wait(
            &watch,
            "the hostile message to show",
            PAGE_LIMIT,
            &format!(
                "[...document.querySelectorAll('#chat-log .text')].some(e => e.textContent === {})",
                js(hostile)
            ),
            PAGE_STATE,
        )
        .await;
    let injected = browser
        .eval(
            &watch,
            "[document.querySelectorAll('#chat-log img, #chat-log script, #chat-log b:not(.author)').length, typeof window.pwned]",
        )
        .await;
    assert_eq!(injected, json!([0, "undefined"]), "chat markup became elements or ran");

    // The moderator deletes it from the page; the member sees the deletion.
    browser
        .eval(
            &watch,
            &format!(
                "document.querySelector('#chat-log li[data-id=\"{hostile_id}\"] .mod button').click(); true"
            ),
        )
        .await;
    let deleted = next_of(&mut member, "deleted").await;
    assert_eq!(deleted["id"], hostile_id, "{deleted}");
    // Mute and ban from the buttons on Bob's message; slow mode and clear from the tools.
    let bobs = "[...document.querySelectorAll('#chat-log li.msg')].find(li => li.innerText.includes('hello from before'))";
    browser.eval(&watch, &format!("{bobs}.querySelectorAll('.mod button')[1].click(); true")).await;
    let muted = next_of(&mut member, "muted").await;
    assert_eq!(muted["user"], "bob", "{muted}");
    browser.eval(&watch, &format!("{bobs}.querySelectorAll('.mod button')[2].click(); true")).await;
    let banned = next_of(&mut member, "banned").await;
    assert_eq!(banned["user"], "bob", "{banned}");
    browser
        .eval(
            &watch,
            "(() => { const slow = document.querySelector('#slow'); slow.value = '5'; \
             slow.dispatchEvent(new Event('change')); return true; })()",
        )
        .await;
    browser
        .wait(
            &watch,
            "slow mode",
            PAGE_LIMIT,
            "document.querySelector('#chat-log').innerText.includes('one message every 5 s')",
            PAGE_STATE,
        )
        .await;
    browser.eval(&watch, "document.querySelector('#chat-clear').click(); true").await;
    browser
        .wait(
            &watch,
            "the chat to be cleared",
            PAGE_LIMIT,
            "document.querySelector('#chat-log').innerText.trim() === 'The chat was cleared.'",
            PAGE_STATE,
        )
        .await;
    // A moderator is exempt from slow mode.
    browser
        .eval(
            &watch,
            "document.querySelector('#chat-input').value = 'Welcome back: slow mode is on'; \
             document.querySelector('#chat-form').requestSubmit(); true",
        )
        .await;
    browser
        .wait(
            &watch,
            "the moderator's message after the clear",
            PAGE_LIMIT,
            "document.querySelector('#chat-log .text') !== null && \
             document.querySelector('#chat-log .text').textContent === 'Welcome back: slow mode is on'",
            PAGE_STATE,
        )
        .await;

    // WebRTC (WHEP) plays first: frames decoded by the browser and advancing, its own
    // statistics shown.
    browser
        .wait(
            &watch,
            "the video to play over WebRTC",
            PAGE_LIMIT,
            &format!("{STATS}.dataset.protocol === 'whep' && Number({STATS}.dataset.frames) > 10"),
            PLAYER_STATE,
        )
        .await;
    keeps_playing(&mut browser, &watch, "whep", 10).await;
    assert_eq!(
        browser.eval(&watch, "document.querySelector('#stat-protocol').textContent").await,
        "WebRTC (WHEP)"
    );
    browser
        .wait(
            &watch,
            "the WebRTC statistics",
            PAGE_LIMIT,
            "document.querySelector('#stat-resolution').textContent === '320×240' && \
             / ms /.test(document.querySelector('#stat-latency').textContent) && \
             /fps/.test(document.querySelector('#stat-fps').textContent)",
            PLAYER_STATE,
        )
        .await;
    screenshots(&mut browser, &watch, "watch").await;
    // An RTMP stream's AAC reaches WebRTC viewers as Opus (transcoded once on the node):
    // unmuted (the browser measures what it plays), its tone is heard.
    browser.eval(&watch, "document.querySelector('#video').muted = false; true").await;
    browser
        .wait(
            &watch,
            "the RTMP stream's sound over WebRTC",
            PAGE_LIMIT,
            "Number(document.querySelector('#stat-audio').dataset.level) > 0.01",
            PLAYER_STATE,
        )
        .await;
    browser.eval(&watch, "document.querySelector('#video').muted = true; true").await;

    // HLS when the viewer picks it: frames decoded and the position advancing.
    choose(&mut browser, &watch, "hls").await;
    browser
        .wait(
            &watch,
            "the video to play over HLS",
            PAGE_LIMIT,
            &format!(
                "{STATS}.dataset.protocol === 'hls' && \
                 document.querySelector('#video').currentTime > 1 && \
                 document.querySelector('#video').getVideoPlaybackQuality().totalVideoFrames > 10"
            ),
            PLAYER_STATE,
        )
        .await;
    let (t, frames) = {
        let v = browser
            .eval(&watch, "[document.querySelector('#video').currentTime, document.querySelector('#video').getVideoPlaybackQuality().totalVideoFrames]")
            .await;
        (v[0].as_f64().expect("time"), v[1].as_f64().expect("frames"))
    };
    browser
        .wait(
            &watch,
            "the video to keep playing",
            PAGE_LIMIT,
            &format!(
                "document.querySelector('#video').currentTime > {t} + 1 && \
                 document.querySelector('#video').getVideoPlaybackQuality().totalVideoFrames > {frames}"
            ),
            PAGE_STATE,
        )
        .await;
    assert_eq!(
        browser.eval(&watch, "document.querySelector('#stat-protocol').textContent").await,
        "HLS"
    );
    // Unmuted, the page's meter hears the fixture's tone.
    browser.eval(&watch, "document.querySelector('#video').muted = false; true").await;
    browser
        .wait(
            &watch,
            "an audio level above zero",
            PAGE_LIMIT,
            "Number(document.querySelector('#stat-audio').dataset.level) > 0.01",
            "document.querySelector('#stat-audio').textContent",
        )
        .await;

    // LL-HLS when the viewer picks it (hls.js through Media Source Extensions): frames
    // decoded and advancing, and its distance from the node's clock reported.
    browser.eval(&watch, "document.querySelector('#video').muted = true; true").await;
    choose(&mut browser, &watch, "llhls").await;
    browser
        .wait(
            &watch,
            "the video to play over LL-HLS",
            PAGE_LIMIT,
            &format!(
                "{STATS}.dataset.protocol === 'llhls' && Number({STATS}.dataset.frames) > 10 && \
                 Number({STATS}.dataset.latencyMs) > 0"
            ),
            PLAYER_STATE,
        )
        .await;
    keeps_playing(&mut browser, &watch, "llhls", 30).await;
    assert_eq!(
        browser.eval(&watch, "document.querySelector('#stat-protocol').textContent").await,
        "LL-HLS"
    );

    // A viewer whose token has no name is told why it cannot post, in words.
    let nameless = token("carol", None, &[Role::Viewer]);
    let quiet =
        browser.open(&format!("{base}/watch/live/show?token={nameless}"), PHONE.0, PHONE.1).await;
    browser
        .wait(
            &quiet,
            "the chat to open",
            PAGE_LIMIT,
            "document.querySelector('#chat-status').textContent.startsWith('Reading')",
            PAGE_STATE,
        )
        .await;
    browser
        .eval(
            &quiet,
            "document.querySelector('#chat-input').value = 'may I?'; \
             document.querySelector('#chat-form').requestSubmit(); true",
        )
        .await;
    browser
        .wait(
            &quiet,
            "the refusal in words",
            PAGE_LIMIT,
            "document.querySelector('#chat-status').textContent.includes('has no name')",
            PAGE_STATE,
        )
        .await;

    // The console without an admin token: the calls are refused and the page says so.
    let refused = browser.open(&format!("{base}/console"), DESKTOP.0, DESKTOP.1).await;
    browser
        .wait(
            &refused,
            "the console to say it was refused",
            PAGE_LIMIT,
            "document.querySelector('#status').textContent.includes('refused')",
            PAGE_STATE,
        )
        .await;
    screenshots(&mut browser, &refused, "console-refused").await;
    let with_viewer =
        browser.open(&format!("{base}/console?token={ann}"), DESKTOP.0, DESKTOP.1).await;
    browser
        .wait(
            &with_viewer,
            "the console to refuse a moderator's token",
            PAGE_LIMIT,
            "document.querySelector('#status').textContent.includes('not an admin token')",
            PAGE_STATE,
        )
        .await;

    // With an admin token: the stream and its statistics, this node, recording on and off.
    let admin = token("ops", None, &[Role::Admin]);
    let console =
        browser.open(&format!("{base}/console?token={admin}"), DESKTOP.0, DESKTOP.1).await;
    let row = "document.querySelector('tr[data-stream=\"live/show\"]')";
    browser
        .wait(
            &console,
            "the console to list live/show with its statistics",
            PAGE_LIMIT,
            &format!("!!{row} && {row}.innerText.includes('h264') && {row}.querySelector('.recording').textContent === 'off'"),
            PAGE_STATE,
        )
        .await;
    assert_eq!(browser.eval(&console, "location.search").await, "");
    browser
        .wait(
            &console,
            "the node list",
            PAGE_LIMIT,
            "document.querySelector('#nodes tbody').innerText.includes('this node')",
            PAGE_STATE,
        )
        .await;
    screenshots(&mut browser, &console, "console").await;
    browser
        .eval(&console, &format!("{row}.querySelector('[data-action=record]').click(); true"))
        .await;
    browser
        .wait(
            &console,
            "recording on",
            PAGE_LIMIT,
            &format!("{row}.querySelector('.recording').textContent === 'on'"),
            PAGE_STATE,
        )
        .await;
    let status = reqwest::Client::new()
        .get(http_url(&node, "/api/v1/streams/live/show/recording"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("GET recording");
    assert_eq!(status.status(), 200, "the node records live/show");
    browser
        .eval(&console, &format!("{row}.querySelector('[data-action=record]').click(); true"))
        .await;
    browser
        .wait(
            &console,
            "recording off",
            PAGE_LIMIT,
            &format!("{row}.querySelector('.recording').textContent === 'off'"),
            PAGE_STATE,
        )
        .await;

    // Kick: the stream ends.
    browser
        .eval(&console, &format!("{row}.querySelector('[data-action=kick]').click(); true"))
        .await;
    wait_for("the kicked stream to end", PAGE_LIMIT, || node.stream(&key).is_none()).await;
    let exited = tokio::time::timeout(PAGE_LIMIT, publisher.wait()).await;
    assert!(exited.is_ok(), "the kicked publisher was disconnected");
    browser
        .wait(
            &console,
            "the console to show the kick",
            PAGE_LIMIT,
            "document.querySelector('#action').textContent.includes('done') && \
             !document.querySelector('tr[data-stream=\"live/show\"]')",
            PAGE_STATE,
        )
        .await;
    drop(browser);
    node.shutdown().await;
}

/// Waits until the go-live page `tab` shows `state` (`offline`, `connecting`, `live`).
async fn golive_state(browser: &mut Browser, tab: &Tab, state: &str, what: &str) {
    browser
        .wait(
            tab,
            what,
            PAGE_LIMIT,
            &format!("document.querySelector('#state').dataset.state === '{state}'"),
            PAGE_STATE,
        )
        .await;
}

#[actix_rt::test]
async fn the_go_live_page_publishes_over_whip_and_the_watch_page_plays_it_over_whep() {
    let mut config = config();
    config.auth.require_publish = true;
    let node = start_node(config).await;
    let key = StreamKey::new("live", "cam").expect("name");
    let mut browser = Browser::start().await;
    let base = http_url(&node, "");

    // Home's form opens the go-live page.
    let home = browser.open(&format!("{base}/"), DESKTOP.0, DESKTOP.1).await;
    browser
        .wait(
            &home,
            "the home page's script",
            PAGE_LIMIT,
            "document.querySelector('#status').textContent.startsWith('Nothing is live')",
            PAGE_STATE,
        )
        .await;
    browser
        .eval(
            &home,
            "document.querySelector('#pick-key').value = 'cam'; \
             document.querySelector('#pick').requestSubmit(document.querySelector('#pick-publish')); true",
        )
        .await;
    browser
        .wait(
            &home,
            "the form to open the go-live page",
            PAGE_LIMIT,
            "location.pathname === '/publish/live/cam' && \
             document.querySelector('#status').textContent.startsWith('Camera ready')",
            PAGE_STATE,
        )
        .await;

    // Without a token the node refuses, and the page says why in words.
    let refused =
        browser.open(&format!("{base}/publish/live/cam?autostart=1"), PHONE.0, PHONE.1).await;
    browser
        .wait(
            &refused,
            "the refusal in words",
            PAGE_LIMIT,
            "document.querySelector('#status').textContent.includes('wants a token') && \
             document.querySelector('#state').dataset.state === 'offline'",
            PAGE_STATE,
        )
        .await;
    assert!(node.stream(&key).is_none(), "nothing went live without a token");

    // With a publisher token in the address: live at once, the token taken off the address.
    let publisher = token("caster", Some("Caster"), &[Role::Publisher]);
    let golive = browser
        .open(
            &format!("{base}/publish/live/cam?autostart=1&token={publisher}"),
            DESKTOP.0,
            DESKTOP.1,
        )
        .await;
    golive_state(&mut browser, &golive, "live", "the go-live page to say it is live").await;
    live(&node, &key).await;
    assert_eq!(browser.eval(&golive, "document.querySelector('#state').textContent").await, "Live");
    let href = browser.eval(&golive, "location.href").await;
    let href = href.as_str().expect("href");
    assert!(!href.contains("token") && href.ends_with("/publish/live/cam?autostart=1"), "{href}");
    // The page shows what it sends and what OBS would need.
    browser
        .wait(
            &golive,
            "the sending statistics",
            PAGE_LIMIT,
            "document.querySelector('#stat-video').textContent.includes('H264') && \
             /b\\/s/.test(document.querySelector('#stat-bitrate').textContent)",
            PAGE_STATE,
        )
        .await;
    let rtmp =
        browser.eval(&golive, "document.querySelector('#url-rtmp-server').textContent").await;
    assert_eq!(rtmp, format!("rtmp://127.0.0.1:{}/live", node.rtmp_addr().expect("rtmp").port()));
    assert_eq!(
        browser.eval(&golive, "document.querySelector('#rtmp-key').textContent").await,
        "cam"
    );
    let whip = browser.eval(&golive, "document.querySelector('#url-whip').textContent").await;
    assert_eq!(whip, format!("{base}/whip/live/cam"));

    // FFmpeg reads it over RTMP: H.264, and the browser's Opus transcoded to AAC.
    let dir = tempfile::tempdir().expect("tempdir");
    let flv = dir.path().join("golive.flv");
    let out = record(&rtmp_url(&node, "cam"), 3, &flv).await;
    assert!(out.status.success(), "ffmpeg read RTMP: {}", String::from_utf8_lossy(&out.stderr));
    let info = probe(&flv).await;
    let streams = info["streams"].as_array().expect("streams");
    assert!(streams.iter().any(|s| s["codec_name"] == "h264"), "{info}");
    assert!(streams.iter().any(|s| s["codec_name"] == "aac"), "{info}");
    // And over HLS.
    let ts = dir.path().join("golive.ts");
    let out = record(&http_url(&node, "/live/cam/index.m3u8"), 3, &ts).await;
    assert!(out.status.success(), "ffmpeg read HLS: {}", String::from_utf8_lossy(&out.stderr));
    let info = probe(&ts).await;
    let streams = info["streams"].as_array().expect("streams");
    assert!(streams.iter().any(|s| s["codec_name"] == "h264"), "{info}");
    assert!(streams.iter().any(|s| s["codec_name"] == "aac"), "{info}");
    screenshots(&mut browser, &golive, "golive").await;

    // Beside an FFmpeg publisher, the console lists both streams with their statistics.
    let rtmp_token = token("encoder", None, &[Role::Publisher]);
    let _ffmpeg = publish_looped(&format!("{}?token={rtmp_token}", rtmp_url(&node, "show")));
    live(&node, &StreamKey::new("live", "show").expect("name")).await;
    let admin = token("ops", None, &[Role::Admin]);
    let console =
        browser.open(&format!("{base}/console?token={admin}"), DESKTOP.0, DESKTOP.1).await;
    let listed = |name: &str| {
        let row = format!("document.querySelector('tr[data-stream=\"live/{name}\"]')");
        format!("(!!{row} && {row}.innerText.includes('h264'))")
    };
    browser
        .wait(
            &console,
            "the console to list the browser's and FFmpeg's streams",
            PAGE_LIMIT,
            &format!("{} && {}", listed("cam"), listed("show")),
            PAGE_STATE,
        )
        .await;

    // The watch page plays it over WebRTC, with its sound (Opus passes through).
    let watch = browser.open(&format!("{base}/watch/live/cam"), DESKTOP.0, DESKTOP.1).await;
    browser
        .wait(
            &watch,
            "the browser's stream to play over WebRTC",
            PAGE_LIMIT,
            &format!("{STATS}.dataset.protocol === 'whep' && Number({STATS}.dataset.frames) > 10"),
            PLAYER_STATE,
        )
        .await;
    // Unmuted (the browser measures what it plays), the microphone's sound is heard.
    browser.eval(&watch, "document.querySelector('#video').muted = false; true").await;
    browser
        .wait(
            &watch,
            "the browser's sound over WebRTC",
            PAGE_LIMIT,
            "Number(document.querySelector('#stat-audio').dataset.level) > 0.01",
            PLAYER_STATE,
        )
        .await;

    // Stop: DELETE on the session, the stream ends, the page says offline.
    browser.eval(&golive, "document.querySelector('#stop').click(); true").await;
    wait_for("the stopped stream to end", PAGE_LIMIT, || node.stream(&key).is_none()).await;
    golive_state(&mut browser, &golive, "offline", "the go-live page to say it is offline").await;
    drop(browser);
    node.shutdown().await;
}

#[actix_rt::test]
async fn the_watch_page_falls_back_to_hls_when_webrtc_is_off_or_does_not_connect() {
    let mut browser = Browser::start().await;

    // A node without WebRTC or LL-HLS: the browser's own HLS player, and the page says why.
    let mut without_webrtc = config();
    without_webrtc.webrtc.enabled = false;
    without_webrtc.hls.ll = false;
    let node = start_node(without_webrtc).await;
    let _publisher = publish_looped(&rtmp_url(&node, "show"));
    live(&node, &StreamKey::new("live", "show").expect("name")).await;
    let base = http_url(&node, "");
    let watch = browser.open(&format!("{base}/watch/live/show"), PHONE.0, PHONE.1).await;
    browser
        .wait(
            &watch,
            "HLS playback on a node without WebRTC",
            PAGE_LIMIT,
            &format!(
                "{STATS}.dataset.protocol === 'hls' && Number({STATS}.dataset.frames) > 10 && \
                 document.querySelector('#player-note').textContent.includes('WebRTC is off')"
            ),
            PLAYER_STATE,
        )
        .await;
    // Its go-live page points to RTMP instead.
    let golive = browser.open(&format!("{base}/publish/live/mine"), PHONE.0, PHONE.1).await;
    browser
        .wait(
            &golive,
            "the go-live page to say WebRTC is off",
            PAGE_LIMIT,
            "document.querySelector('#status').textContent.includes('WebRTC is off') && \
             document.querySelector('#start').disabled && \
             document.querySelector('#url-rtmp-server').textContent.startsWith('rtmp://')",
            PAGE_STATE,
        )
        .await;
    node.shutdown().await;

    // A node whose WebRTC candidate leads nowhere (a UDP socket that never answers): the
    // WHEP offer is answered, ICE never connects, and the page falls back to LL-HLS.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
    let mut nowhere = config();
    nowhere.webrtc.public_addrs = vec![silent.local_addr().expect("address").to_string()];
    let node = start_node(nowhere).await;
    let _publisher = publish_looped(&rtmp_url(&node, "show"));
    live(&node, &StreamKey::new("live", "show").expect("name")).await;
    let watch = browser.open(&http_url(&node, "/watch/live/show"), DESKTOP.0, DESKTOP.1).await;
    browser
        .wait(
            &watch,
            "LL-HLS playback after WebRTC did not connect",
            PAGE_LIMIT,
            &format!(
                "{STATS}.dataset.protocol === 'llhls' && Number({STATS}.dataset.frames) > 10 && \
                 document.querySelector('#player-note').textContent.includes('did not connect')"
            ),
            PLAYER_STATE,
        )
        .await;
    drop(browser);
    node.shutdown().await;
}

/// A raw HTTP/1.1 GET of `target` exactly as written (no client normalizing `..`):
/// the status and the body.
fn raw_get(node: &Node, target: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(node.http_addr()).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    (status, answer)
}

#[actix_rt::test]
async fn pages_carry_strict_headers_and_refuse_unknown_and_climbing_paths() {
    let node = start_node(config()).await;
    let client = reqwest::Client::new();
    for path in ["/", "/watch/live/show", "/publish/live/show", "/console"] {
        let resp = client.get(http_url(&node, path)).send().await.expect("GET");
        assert_eq!(resp.status(), 200, "{path}");
        let headers = resp.headers().clone();
        let csp = headers["content-security-policy"].to_str().expect("ascii");
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["cache-control"], "no-cache");
        assert!(headers["content-type"].to_str().expect("ascii").starts_with("text/html"));
        let body = resp.text().await.expect("body");
        assert!(body.contains("<title>") && body.contains("Test &lt;TV&gt;"), "{body}");
        assert!(!body.contains("<TV>"), "the title is escaped");
    }

    // Assets: typed, revalidated with an ETag.
    let resp = client.get(http_url(&node, "/ui/watch.js")).send().await.expect("GET");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().expect("ascii").starts_with("text/javascript"));
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    let etag = resp.headers()["etag"].clone();
    let again = client
        .get(http_url(&node, "/ui/watch.js"))
        .header("if-none-match", etag)
        .send()
        .await
        .expect("GET");
    assert_eq!(again.status(), 304);

    // Unknown pages and assets, bad names, climbing paths: refused, nothing from disk.
    for path in [
        "/nope",
        "/console/x",
        "/watch/live",
        "/publish/live",
        "/ui/nope.js",
        "/ui/",
        "/ui/style.css/x",
    ] {
        let resp = client.get(http_url(&node, path)).send().await.expect("GET");
        assert_eq!(resp.status(), 404, "{path}");
    }
    for path in ["/watch/live/..%2F..%2FCargo.toml", "/publish/..%2F..%2FCargo.toml/x"] {
        let resp = client.get(http_url(&node, path)).send().await.expect("GET");
        assert_eq!(resp.status(), 400, "a stream name that climbs is not a name: {path}");
    }
    for target in [
        "/ui/../Cargo.toml",
        "/ui/../../Cargo.toml",
        "/ui/..%2F..%2FCargo.toml",
        "/ui/%2e%2e/%2e%2e/Cargo.toml",
        "/ui/..\\..\\Cargo.toml",
        "/ui/assets/home.html",
        "/ui/%2Fetc%2Fpasswd",
        "/ui//etc/passwd",
    ] {
        let (status, answer) = raw_get(&node, target);
        assert!((400..500).contains(&status), "{target}: {status}");
        assert!(
            !answer.contains("[package]") && !answer.contains("root:"),
            "{target} leaked a file"
        );
    }
    node.shutdown().await;
}

#[actix_rt::test]
async fn the_public_listing_shows_what_a_viewer_may_see() {
    let mut config = config();
    config.auth.require_play = true;
    let node = start_node(config).await;
    let _publisher = publish_looped(&rtmp_url(&node, "show"));
    live(&node, &StreamKey::new("live", "show").expect("name")).await;
    let client = reqwest::Client::new();
    let url = http_url(&node, "/api/v1/live");
    let resp = client.get(&url).send().await.expect("GET");
    assert_eq!(resp.status(), 401, "playing needs a token here, so listing does");
    let viewer = token("v", None, &[Role::Viewer]);
    let deadline = tokio::time::Instant::now() + PAGE_LIMIT;
    let listed = loop {
        let resp = client.get(&url).bearer_auth(&viewer).send().await.expect("GET");
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.expect("JSON");
        if body["streams"][0]["video"]["width"].is_u64() {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "the listing never showed video: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let stream = &listed["streams"][0];
    assert_eq!(stream["name"], "live/show", "{listed}");
    let fields: Vec<&String> = stream.as_object().expect("object").keys().collect();
    for field in fields {
        assert!(
            ["name", "uptime_seconds", "viewers", "video", "audio", "fps", "bitrate_bps"]
                .contains(&field.as_str()),
            "the listing shows {field}: {listed}"
        );
    }
    node.shutdown().await;

    // `ui.enabled = false`: no pages, no assets, no listing.
    let mut config = test_config();
    config.ui.enabled = false;
    let node = start_node(config).await;
    for path in
        ["/", "/console", "/watch/live/show", "/publish/live/show", "/ui/style.css", "/api/v1/live"]
    {
        let resp = client.get(http_url(&node, path)).send().await.expect("GET");
        assert_eq!(resp.status(), 404, "{path}");
    }
    node.shutdown().await;
}

#[actix_rt::test]
async fn the_binary_takes_the_ui_settings_from_the_environment() {
    let node = ZenliveProcess::start(
        "ui-env",
        "ui-env",
        &[],
        &[("ZENLIVE_UI_TITLE", "Channel & Co"), ("ZENLIVE_UI_LIST_STREAMS", "false")],
    )
    .await;
    let client = reqwest::Client::new();
    let page = client.get(format!("http://{}/", node.http)).send().await.expect("GET /");
    assert_eq!(page.status(), 200);
    let body = page.text().await.expect("body");
    assert!(body.contains("<title>Channel &amp; Co</title>"), "{body}");
    let listing =
        client.get(format!("http://{}/api/v1/live", node.http)).send().await.expect("GET");
    assert_eq!(listing.status(), 404);
    let body: Value = listing.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "listing_disabled", "{body}");
    drop(node);

    let node =
        ZenliveProcess::start("ui-off", "ui-off", &[], &[("ZENLIVE_UI_ENABLED", "false")]).await;
    let page = client.get(format!("http://{}/", node.http)).send().await.expect("GET /");
    assert_eq!(page.status(), 404, "no pages with ZENLIVE_UI_ENABLED=false");
}

/// LL-HLS latency in Chromium, for BENCHMARKS.md: a benchmark, not run by default (it
/// samples for a minute). FFmpeg publishes the fixture in real time (`-re`, copied, no
/// encoder delay), so a frame reaches the node at its publisher's time; the watch page
/// plays `ll.m3u8` (300 ms parts) through hls.js and reports how far the frame on screen is
/// behind the node's clock (its program date-time). Run:
/// `cargo test --release --test ui -- --ignored ll_hls_latency --nocapture`.
#[actix_rt::test]
#[ignore = "a benchmark (BENCHMARKS.md, LL-HLS latency), run by hand"]
async fn ll_hls_latency() {
    let mut browser = Browser::start().await;
    let mut config = config();
    config.hls.part_duration = Duration::from_millis(300);
    let node = start_node(config).await;
    let _publisher = publish_looped(&rtmp_url(&node, "show"));
    live(&node, &StreamKey::new("live", "show").expect("name")).await;
    let url = http_url(&node, "/watch/live/show?protocol=llhls");
    let watch = browser.open(&url, DESKTOP.0, DESKTOP.1).await;
    browser
        .wait(
            &watch,
            "the video to play over LL-HLS",
            PAGE_LIMIT,
            &format!(
                "{STATS}.dataset.protocol === 'llhls' && Number({STATS}.dataset.latencyMs) > 0"
            ),
            PLAYER_STATE,
        )
        .await;
    // Ten seconds to settle at its hold-back, then a sample a second for a minute.
    let mut samples = Vec::new();
    for n in 0..70 {
        let latency = browser_latency(&mut browser, &watch).await;
        if n >= 10 {
            samples.extend(latency);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let frames = browser.eval(&watch, &format!("Number({STATS}.dataset.frames)")).await;
    let dropped = browser
        .eval(
            &watch,
            "document.querySelector('#video').getVideoPlaybackQuality().droppedVideoFrames",
        )
        .await;
    let shown = browser.eval(&watch, "document.querySelector('#stat-latency').textContent").await;
    println!("the page says: {shown}; samples in order: {samples:?}");
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    assert!(!samples.is_empty(), "no latency samples");
    println!(
        "ll-hls latency over {} samples: min {} ms, median {} ms, p90 {} ms, max {} ms; frames decoded {frames}, dropped {dropped}",
        samples.len(),
        at(0.0),
        at(0.5),
        at(0.9),
        at(1.0)
    );
    drop(browser);
    node.shutdown().await;
}

/// Picks `protocol` in the watch page's player menu, as a viewer would.
async fn choose(browser: &mut Browser, tab: &Tab, protocol: &str) {
    let pick = format!(
        "(() => {{ const choice = document.querySelector('#protocol'); choice.value = '{protocol}'; \
         choice.dispatchEvent(new Event('change')); return true; }})()"
    );
    browser.eval(tab, &pick).await;
}

/// Waits until the watch page, still playing over `protocol`, has decoded `more` frames
/// beyond those it has now.
async fn keeps_playing(browser: &mut Browser, tab: &Tab, protocol: &str, more: u32) {
    let frames = browser.eval(tab, &format!("Number({STATS}.dataset.frames)")).await;
    let frames = frames.as_f64().expect("frames");
    browser
        .wait(
            tab,
            &format!("the {protocol} picture to keep coming"),
            PAGE_LIMIT,
            &format!(
                "{STATS}.dataset.protocol === '{protocol}' && \
                 Number({STATS}.dataset.frames) > {frames} + {more}"
            ),
            PLAYER_STATE,
        )
        .await;
}

/// The watch page's reported latency in ms, if it reports one.
async fn browser_latency(browser: &mut Browser, tab: &Tab) -> Option<u64> {
    browser
        .eval(tab, &format!("Number({STATS}.dataset.latencyMs) || 0"))
        .await
        .as_f64()
        .filter(|&ms| ms > 0.0)
        .map(|ms| ms as u64)
}
