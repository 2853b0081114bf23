//! The admin API with real clients: FFmpeg publishes, an admin lists and inspects the
//! stream and kicks the publisher; every refusal is a JSON body with a stable code; the
//! OpenAPI document describes what is served; `zenlive token` mints a token the API takes.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use zenlive::auth::Role;
use zenlive::Config;

const SECRET: &str = "admin-api-test-secret-admin-api-test";

fn config() -> Config {
    let mut config = test_config();
    config.auth.jwt_secret = SECRET.to_owned();
    config
}

fn token(roles: &[Role]) -> String {
    mint_token(SECRET, "ops", None, roles)
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = client.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let resp = request.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[actix_rt::test]
async fn an_admin_lists_inspects_and_kicks_and_everyone_else_is_refused() {
    let node = start_node(config()).await;
    let client = reqwest::Client::new();
    let api = |path: &str| http_url(&node, &format!("/api/v1{path}"));
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;

    let (status, body) = call(&client, get.clone(), &api("/streams"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("token_missing")));
    let viewer = token(&[Role::Viewer]);
    let (status, body) = call(&client, get.clone(), &api("/streams"), Some(&viewer)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden_role")));
    let (status, body) = call(&client, get.clone(), &api("/streams"), Some("garbage")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("token_invalid")));

    let admin = token(&[Role::Admin]);
    let (status, body) = call(&client, get.clone(), &api("/streams"), Some(&admin)).await;
    assert_eq!((status, &body["streams"]), (200, &Value::Array(Vec::new())));

    let mut publisher = publish(&fixture(false), &rtmp_url(&node, "ops"));
    wait_live(&node, "ops").await;
    let _player = tokio::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i", &rtmp_url(&node, "ops"), "-c", "copy", "-f", "null", "-"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("player");
    // Details: codecs, resolution, fps, bitrate and viewers, once the rate window filled.
    let mut details = Value::Null;
    for _ in 0..100 {
        let (status, body) =
            call(&client, get.clone(), &api("/streams/live/ops"), Some(&admin)).await;
        assert_eq!(status, 200, "{body}");
        let stats = &body["stats"];
        if stats["uptime_seconds"].as_f64() > Some(6.0) && stats["viewers"]["rtmp"] == 1 {
            details = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = &details["stats"];
    assert_eq!(details["name"], "live/ops", "{details}");
    assert_eq!(stats["media"]["video"]["codec"], "h264");
    assert_eq!(stats["media"]["video"]["width"], 320);
    assert_eq!(stats["media"]["audio"]["codec"], "aac");
    let fps = stats["rates"]["fps"].as_f64().expect("fps");
    assert!((fps - 30.0).abs() <= 1.0, "fps {fps}");
    assert!(stats["rates"]["bitrate_bps"].as_u64() > Some(100_000), "{stats}");
    assert!(stats["started_at"].as_f64() > Some(1.0e9), "{stats}");
    let (_, list) = call(&client, get.clone(), &api("/streams"), Some(&admin)).await;
    assert_eq!(list["streams"][0]["name"], "live/ops");

    // The metrics port reads without a token but does not act.
    let metrics = format!("http://{}/api/v1", node.metrics_addr().expect("metrics"));
    let (status, _) =
        call(&client, get.clone(), &format!("{metrics}/streams/live/ops"), None).await;
    assert_eq!(status, 200);
    let (status, body) =
        call(&client, post.clone(), &format!("{metrics}/streams/live/ops/kick"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("read_only")));

    let (status, body) =
        call(&client, post.clone(), &api("/streams/live/ops/kick"), Some(&viewer)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden_role")));
    let resp = client
        .post(api("/streams/live/ops/kick"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({ "reason": "terms of service" }))
        .send()
        .await
        .expect("kick");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["kicked"], true);
    let status = tokio::time::timeout(Duration::from_secs(15), publisher.wait())
        .await
        .expect("the kicked publisher stops")
        .expect("wait");
    assert!(!status.success());
    wait_for("the stream to end", Duration::from_secs(10), || node.streams().is_empty()).await;
    let (status, body) = call(&client, get.clone(), &api("/streams/live/ops"), Some(&admin)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("stream_not_found")));
    let (status, body) = call(&client, post, &api("/streams/live/ops/kick"), Some(&admin)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("stream_not_found")));
    let (status, body) = call(&client, get, &api("/streams/live/bad%20name"), Some(&admin)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_stream_name")));
    node.shutdown().await;
}

#[actix_rt::test]
async fn without_auth_configured_the_admin_api_is_closed() {
    let node = start_node(test_config()).await;
    let client = reqwest::Client::new();
    let url = http_url(&node, "/api/v1/streams");
    let (status, body) = call(&client, reqwest::Method::GET, &url, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("auth_not_configured")));
    let (status, body) = call(&client, reqwest::Method::GET, &url, Some("anything")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("auth_not_configured")));
    node.shutdown().await;
}

#[actix_rt::test]
async fn the_openapi_document_describes_the_served_routes() {
    let node = start_node(config()).await;
    let client = reqwest::Client::new();
    let resp = client.get(http_url(&node, "/api/v1/openapi.json")).send().await.expect("GET");
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.expect("valid JSON");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 4);
    let admin = token(&[Role::Admin]);
    for (path, operations) in paths {
        let url = http_url(&node, &path.replace("{app}", "live").replace("{stream}", "none"));
        for (method, operation) in operations.as_object().expect("operations") {
            assert!(operation["operationId"].is_string(), "{method} {path}");
            let method =
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let (status, _) = call(&client, method.clone(), &url, Some(&admin)).await;
            // Served (a stream that is not live is a documented 404, not a missing route).
            let documented = operation["responses"].as_object().expect("responses");
            assert!(
                documented.contains_key(&status.to_string()),
                "{method} {path} answered {status}, which the document does not list"
            );
        }
    }
    node.shutdown().await;
}

#[actix_rt::test]
async fn zenlive_token_mints_what_the_node_accepts() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_zenlive"))
        .args(["token", "--sub", "ops", "--role", "admin", "--ttl", "10m"])
        .env("ZENLIVE_AUTH_JWT_SECRET", SECRET)
        .output()
        .await
        .expect("run zenlive token");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let minted = String::from_utf8(out.stdout).expect("utf-8").trim().to_owned();
    assert_eq!(minted.split('.').count(), 3, "a JWT: {minted}");
    let node = start_node(config()).await;
    let client = reqwest::Client::new();
    let url = http_url(&node, "/api/v1/streams");
    let (status, _) = call(&client, reqwest::Method::GET, &url, Some(&minted)).await;
    assert_eq!(status, 200);
    node.shutdown().await;

    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_zenlive"))
        .args(["token", "--sub", "ops", "--role", "admin"])
        .env_remove("ZENLIVE_AUTH_JWT_SECRET")
        .output()
        .await
        .expect("run zenlive token");
    assert!(!refused.status.success(), "no key, no token");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no key configured"));
}
