//! A webhook receiver for tests: an HTTP server on loopback that records every POST (path,
//! signature header, body), and the check of a signature against the tests' secret.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use parking_lot::Mutex;
use serde_json::Value;

/// The webhook secret the tests configure.
pub const SECRET: &str = "webhook-test-secret";

/// One POST a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub signature: Option<String>,
    pub body: Value,
    pub raw: Vec<u8>,
}

/// What a receiver got, in order.
pub type Log = Arc<Mutex<Vec<Received>>>;

/// An HTTP receiver on `addr` (run on the current actix system): records every POST;
/// `/on_publish` refuses the stream `live/no` with 403.
pub fn receiver(addr: SocketAddr, log: Log) -> actix_web::dev::ServerHandle {
    let server = HttpServer::new(move || {
        let log = Arc::clone(&log);
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            let log = Arc::clone(&log);
            async move {
                let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let path = req.path().to_owned();
                let refuse = path == "/on_publish" && json["stream"] == "live/no";
                log.lock().push(Received {
                    path,
                    signature: req
                        .headers()
                        .get("x-zenlive-signature")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                    body: json,
                    raw: body.to_vec(),
                });
                if refuse {
                    HttpResponse::Forbidden().body("not on my watch")
                } else {
                    HttpResponse::Ok().finish()
                }
            }
        }))
    })
    .workers(1)
    .disable_signals()
    .bind(addr)
    .expect("bind receiver")
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    handle
}

/// A loopback address free now.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr")
}

/// Panics unless `received` carries a valid `X-ZenLive-Signature` made with [`SECRET`].
pub fn verify(received: &Received) {
    let header = received.signature.as_deref().expect("signed");
    let t: u64 = header
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .and_then(|t| t.parse().ok())
        .expect("t=");
    assert_eq!(header, zenlive::webhooks::signature(SECRET, t, &received.raw), "valid signature");
}
