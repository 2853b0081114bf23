//! HTTP front-end behaviour: JSON 404s, content types, cache and CORS headers, playlist
//! shape (program date-time, sliding window), and a publisher that is refused or vanishes.

mod common;

use std::time::Duration;

use common::*;

#[actix_rt::test]
async fn unknown_streams_get_json_404s() {
    let node = start_node(test_config()).await;
    let client = reqwest::Client::new();
    for path in
        ["/live/nope/index.m3u8", "/live/nope/0.ts", "/live/nope.flv", "/nothing/here/at/all"]
    {
        let resp = client.get(http_url(&node, path)).send().await.expect("request");
        assert_eq!(resp.status(), 404, "{path}");
        let body: serde_json::Value = resp.json().await.expect("JSON body");
        assert!(body["error"]["code"].is_string(), "{path}: {body}");
    }
    let resp =
        client.get(http_url(&node, "/live/bad%20name/index.m3u8")).send().await.expect("request");
    assert_eq!(resp.status(), 400);
    node.shutdown().await;
}

#[actix_rt::test]
async fn hls_playlist_and_segments_are_served_with_the_right_headers() {
    let node = start_node(test_config()).await;
    let mut publisher = publish(&fixture(false), &rtmp_url(&node, "hdr"));
    wait_live(&node, "hdr").await;
    let client = reqwest::Client::new();
    let url = http_url(&node, "/live/hdr/index.m3u8");
    let mut playlist = String::new();
    for _ in 0..100 {
        let resp = client.get(&url).send().await.expect("request");
        if resp.status() == 200 {
            assert_eq!(resp.headers()["content-type"], "application/vnd.apple.mpegurl");
            assert_eq!(resp.headers()["access-control-allow-origin"], "*");
            assert_eq!(resp.headers()["cache-control"], "no-cache");
            playlist = resp.text().await.expect("text");
            if playlist.matches("#EXTINF").count() >= 2 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(playlist.starts_with("#EXTM3U"), "playlist: {playlist}");
    assert!(playlist.contains("#EXT-X-PROGRAM-DATE-TIME:"), "playlist: {playlist}");
    assert!(playlist.contains("#EXT-X-TARGETDURATION:"), "playlist: {playlist}");
    let segment = playlist.lines().find(|l| l.ends_with(".ts")).expect("a segment URI");
    let resp =
        client.get(http_url(&node, &format!("/live/hdr/{segment}"))).send().await.expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "video/mp2t");
    let body = resp.bytes().await.expect("segment body");
    assert!(body.len() > 188 && body[0] == 0x47 && body.len() % 188 == 0, "an MPEG-TS segment");
    let _ = publisher.kill().await;
    node.shutdown().await;
}

#[actix_rt::test]
async fn a_second_publisher_is_refused_and_a_vanished_one_ends_the_stream() {
    let node = start_node(test_config()).await;
    let url = rtmp_url(&node, "dup");
    let mut first = publish(&fixture(false), &url);
    wait_live(&node, "dup").await;
    let mut second = publish(&fixture(false), &url);
    let status = tokio::time::timeout(Duration::from_secs(15), second.wait())
        .await
        .expect("the second publisher is refused promptly")
        .expect("wait");
    assert!(!status.success(), "the second publisher must fail");
    let key = zenlive::StreamKey::new("live", "dup").expect("key");
    assert!(node.stream(&key).is_some(), "the first publisher is still live");

    // Kill the first publisher (TCP reset, no clean unpublish): the stream must end.
    first.start_kill().expect("kill publisher");
    wait_for("the stream to end", Duration::from_secs(15), || node.stream(&key).is_none()).await;
    node.shutdown().await;
}
