//! The web pages the node serves on its HTTP port: home (`/`), watch
//! (`/watch/{app}/{key}`), go live (`/publish/{app}/{key}`) and the admin console
//! (`/console`), with their scripts and style under `/ui/`. They sit beside the other
//! front-ends and use only the node's public interfaces (`/api/v1`, WHIP, WHEP, HLS, the
//! chat WebSocket), so they double as examples of them.
//!
//! The files are plain HTML, CSS and JavaScript modules in `src/ui/assets/`, built into
//! the binary with `include_str!` (a handful of files with fixed names: a table of
//! constants is simpler than an embedding crate, and nothing is ever read from disk, so no
//! request path can reach the file system). Each asset has exactly one route; any other
//! path under `/ui/` is not one of ours.
//!
//! Every answer carries a strict Content-Security-Policy (scripts and styles from the node
//! only, no inline script or style, no framing) and `X-Content-Type-Options: nosniff`; the
//! pages and assets are revalidated on each load (`no-cache`, assets with an `ETag`), so an
//! upgraded node never serves a stale script. `[ui] enabled = false` answers 404 for all of
//! it.
//!
//! The watch page plays over WebRTC (WHEP) first and falls back to LL-HLS (hls.js, the
//! one file not written here), then HLS (the browser's own player) when WebRTC is off,
//! refused, or does not connect; the go-live page publishes the
//! browser's camera and microphone over WHIP. Both only use the node's own URLs, so the
//! policy needs nothing beyond `connect-src 'self'` (WebRTC media is not a fetch).

use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::context::NodeContext;
use crate::http::common::{stream_key, ApiError};

/// The Content-Security-Policy of every page and asset: only the node's own scripts,
/// styles and media; no inline script or style (chat text can never become code), no
/// plugins, no framing, no `<base>`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; media-src 'self' blob:; connect-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    /// Its name under `/ui/`.
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

const fn asset(name: &'static str, content_type: &'static str, body: &'static str) -> Asset {
    Asset { name, content_type, body }
}

/// The scripts and style the pages load.
const ASSETS: &[Asset] = &[
    asset("style.css", CSS, include_str!("assets/style.css")),
    asset("common.js", JS, include_str!("assets/common.js")),
    asset("chat.js", JS, include_str!("assets/chat.js")),
    asset("home.js", JS, include_str!("assets/home.js")),
    asset("webrtc.js", JS, include_str!("assets/webrtc.js")),
    asset("players.js", JS, include_str!("assets/players.js")),
    asset("llhls.js", JS, include_str!("assets/llhls.js")),
    // hls.js (Apache-2.0, vendored from npm: see the file's first line), the LL-HLS
    // player's engine; loaded only when a viewer plays over LL-HLS.
    asset("hls.mjs", JS, include_str!("assets/vendor/hls.mjs")),
    asset("watch.js", JS, include_str!("assets/watch.js")),
    asset("golive.js", JS, include_str!("assets/golive.js")),
    asset("console.js", JS, include_str!("assets/console.js")),
];

/// The page templates: `{{title}}` and `{{data}}` (the `<body>`'s `data-` attributes) are
/// filled in.
const HOME: &str = include_str!("assets/home.html");
const WATCH: &str = include_str!("assets/watch.html");
const CONSOLE: &str = include_str!("assets/console.html");
const GOLIVE: &str = include_str!("assets/golive.html");

/// What the pages are rendered from: the configuration and the bound listeners, fixed at
/// start.
#[derive(Debug, Clone)]
pub struct Pages {
    enabled: bool,
    /// The title, HTML-escaped.
    title: String,
    rtmp_port: Option<u16>,
    metrics_port: Option<u16>,
    /// `webrtc.ice_servers`, space-separated and HTML-escaped (the URLs hold no spaces:
    /// the configuration checks them).
    ice_servers: String,
    /// Whether the node serves LL-HLS playlists (`hls.enabled` and `hls.ll`).
    ll_hls: bool,
    /// Each asset's `ETag`, in `ASSETS` order.
    etags: Arc<[String]>,
}

impl Pages {
    /// Pages for `config`, telling players the bound RTMP and metrics ports.
    pub fn new(config: &Config, rtmp_port: Option<u16>, metrics_port: Option<u16>) -> Self {
        let etags = ASSETS
            .iter()
            .map(|asset| {
                let digest = Sha256::digest(asset.body.as_bytes());
                format!("\"{}\"", hex::encode(&digest[..12]))
            })
            .collect();
        Self {
            enabled: config.ui.enabled,
            title: escape_html(&config.ui.title),
            rtmp_port,
            metrics_port,
            ice_servers: escape_html(&config.webrtc.ice_servers.join(" ")),
            ll_hls: config.hls.enabled && config.hls.ll,
            etags,
        }
    }

    /// `template` with the title and the page's data filled in: whether tokens are
    /// checked, whether WHIP and WHEP are served, whether LL-HLS is, the ports, and the
    /// stream.
    fn render(
        &self,
        template: &str,
        auth_on: bool,
        webrtc_on: bool,
        stream: Option<(&str, &str)>,
    ) -> String {
        let on_off = |on: bool| if on { "on" } else { "off" };
        let mut data = format!(
            "data-auth=\"{}\" data-webrtc=\"{}\" data-llhls=\"{}\"",
            on_off(auth_on),
            on_off(webrtc_on),
            on_off(self.ll_hls)
        );
        if webrtc_on && !self.ice_servers.is_empty() {
            data.push_str(&format!(" data-ice-servers=\"{}\"", self.ice_servers));
        }
        if let Some(port) = self.rtmp_port {
            data.push_str(&format!(" data-rtmp-port=\"{port}\""));
        }
        if let Some(port) = self.metrics_port {
            data.push_str(&format!(" data-metrics-port=\"{port}\""));
        }
        if let Some((app, key)) = stream {
            // Checked stream names: `[A-Za-z0-9._-]` only, nothing to escape.
            data.push_str(&format!(" data-app=\"{app}\" data-key=\"{key}\""));
        }
        template.replace("{{title}}", &self.title).replace("{{data}}", &data)
    }
}

/// `text` safe inside HTML text and double-quoted attributes.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The pages' routes; [`Pages`] must be in the app data. Registered before the media
/// routes, whose patterns would otherwise take `/watch/...` and `/ui/...`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(home))
        .route("/console", web::get().to(console))
        .route("/watch/{app}/{stream}", web::get().to(watch))
        .route("/publish/{app}/{stream}", web::get().to(publish));
    for (index, asset) in ASSETS.iter().enumerate() {
        cfg.route(
            &format!("/ui/{}", asset.name),
            web::get().to(move |pages: web::Data<Pages>, req: HttpRequest| async move {
                serve_asset(&pages, index, &req)
            }),
        );
    }
}

fn disabled() -> ApiError {
    ApiError::not_found("not_found", "no such resource")
}

/// The headers every page and asset carries.
fn secured(status: StatusCode) -> HttpResponseBuilder {
    let mut builder = HttpResponse::build(status);
    builder
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        // A page opened with `?token=` must not hand it on in a Referer.
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    builder
}

fn page(
    pages: &Pages,
    node: &NodeContext,
    template: &str,
    stream: Option<(&str, &str)>,
) -> Result<HttpResponse, ApiError> {
    if !pages.enabled {
        return Err(disabled());
    }
    let auth_on = node.auth.load().configured();
    let webrtc_on = node.webrtc.is_some();
    Ok(secured(StatusCode::OK)
        .content_type("text/html; charset=utf-8")
        .body(pages.render(template, auth_on, webrtc_on, stream)))
}

async fn home(
    pages: web::Data<Pages>,
    node: web::Data<NodeContext>,
) -> Result<HttpResponse, ApiError> {
    page(&pages, &node, HOME, None)
}

async fn console(
    pages: web::Data<Pages>,
    node: web::Data<NodeContext>,
) -> Result<HttpResponse, ApiError> {
    page(&pages, &node, CONSOLE, None)
}

async fn watch(
    pages: web::Data<Pages>,
    node: web::Data<NodeContext>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    stream_page(&pages, &node, WATCH, path.into_inner())
}

async fn publish(
    pages: web::Data<Pages>,
    node: web::Data<NodeContext>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    stream_page(&pages, &node, GOLIVE, path.into_inner())
}

/// A page about one stream, whose name must be a stream name.
fn stream_page(
    pages: &Pages,
    node: &NodeContext,
    template: &str,
    (app, stream): (String, String),
) -> Result<HttpResponse, ApiError> {
    if !pages.enabled {
        return Err(disabled());
    }
    let key = stream_key(&app, &stream)?;
    page(pages, node, template, Some((key.app(), key.name())))
}

fn serve_asset(pages: &Pages, index: usize, req: &HttpRequest) -> Result<HttpResponse, ApiError> {
    let (Some(asset), Some(etag)) = (ASSETS.get(index), pages.etags.get(index)) else {
        return Err(disabled());
    };
    if !pages.enabled {
        return Err(disabled());
    }
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let etag = HeaderValue::from_str(etag).map_err(|_| disabled())?;
    if fresh {
        return Ok(secured(StatusCode::NOT_MODIFIED).insert_header((header::ETAG, etag)).finish());
    }
    Ok(secured(StatusCode::OK)
        .insert_header((header::ETAG, etag))
        .content_type(asset.content_type)
        .body(asset.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_title_is_escaped_and_the_data_filled_in() {
        let mut config = Config::default();
        config.ui.title = "<b>\"Town\" & 'hall'</b>".into();
        config.webrtc.ice_servers = vec!["stun:stun.example.net:3478".into()];
        let pages = Pages::new(&config, Some(1935), None);
        let html = pages.render(WATCH, true, true, Some(("live", "show")));
        assert!(
            html.contains("&lt;b&gt;&quot;Town&quot; &amp; &#39;hall&#39;&lt;/b&gt;"),
            "{html}"
        );
        assert!(!html.contains("<b>"), "{html}");
        assert!(html.contains("data-auth=\"on\" data-webrtc=\"on\" data-llhls=\"on\""), "{html}");
        assert!(html.contains("data-ice-servers=\"stun:stun.example.net:3478\""), "{html}");
        assert!(html.contains("data-rtmp-port=\"1935\""), "{html}");
        assert!(html.contains("data-app=\"live\" data-key=\"show\""), "{html}");
        assert!(!html.contains("{{"), "{html}");
        let off = pages.render(GOLIVE, false, false, Some(("live", "show")));
        assert!(off.contains("data-auth=\"off\" data-webrtc=\"off\""), "{off}");
        assert!(!off.contains("data-ice-servers"), "{off}");
    }

    /// Whether `html` has an ` on...=` attribute.
    fn has_handler_attribute(html: &str) -> bool {
        html.match_indices(" on").any(|(at, _)| {
            let rest = &html[at + 3..];
            let name_end = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
            name_end > 0 && rest[name_end..].starts_with('=')
        })
    }

    #[test]
    fn pages_have_no_inline_script_or_style() {
        for template in [HOME, WATCH, CONSOLE, GOLIVE] {
            let lower = template.to_ascii_lowercase();
            assert!(!lower.contains("<script>"), "inline script in a page");
            assert!(!lower.contains("<style"), "inline style in a page");
            assert!(!lower.contains(" style="), "a style attribute in a page");
            assert!(!has_handler_attribute(&lower), "an event handler attribute in a page");
            assert!(lower.contains("<script type=\"module\" src=\"/ui/"), "no module script");
        }
    }
}
