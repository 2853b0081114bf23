//! Binds the node's listeners and starts its front-ends.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{web, App, HttpServer};
use zenlive_actors::events::ConnectionKind;

use crate::context::NodeContext;
use crate::start_error::{BindError, StartError};
use crate::{http, rtmp, ui};

fn bind_std(
    what: &'static str,
    addr: std::net::SocketAddr,
) -> Result<std::net::TcpListener, BindError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|cause| BindError { what, addr, cause })?;
    listener.set_nonblocking(true).map_err(|cause| BindError { what, addr, cause })?;
    Ok(listener)
}

/// The server of the HTTP port's routes on `listener`, with TLS when `tls` is given; one
/// worker per event loop, connections counted.
fn media_server(
    context: &Arc<NodeContext>,
    pages: &web::Data<ui::Pages>,
    listener: std::net::TcpListener,
    tls: Option<rustls::ServerConfig>,
) -> std::io::Result<actix_web::dev::Server> {
    let data = web::Data::from(Arc::clone(context));
    let pages = pages.clone();
    let counters = Arc::clone(&context.counters);
    let server = HttpServer::new(move || {
        App::new().app_data(data.clone()).app_data(pages.clone()).configure(http::routes)
    })
    // The gauge lives in the connection's extensions, dropped when it closes.
    .on_connect(move |connection, extensions| {
        extensions.insert(counters.connection(ConnectionKind::Http));
        // The address the client reached: WHIP's fallback ICE candidate.
        let tcp = connection.downcast_ref::<actix_web::rt::net::TcpStream>();
        if let Some(local) = tcp.and_then(|s| s.local_addr().ok()) {
            extensions.insert(crate::webrtc::resource::LocalAddr(local.ip()));
        }
    })
    .workers(context.pool.len())
    .disable_signals()
    .shutdown_timeout(5);
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    };
    Ok(server.run())
}

/// Starts every enabled front-end of `context`.
/// The node's bound listeners: their addresses, and the handles that stop them.
pub(crate) struct Listeners {
    pub(crate) rtmp_addr: Option<SocketAddr>,
    pub(crate) http_addr: SocketAddr,
    pub(crate) metrics_addr: Option<SocketAddr>,
    pub(crate) cluster_addr: Option<SocketAddr>,
    pub(crate) tasks: Vec<actix_rt::task::JoinHandle<()>>,
    pub(crate) http: actix_web::dev::ServerHandle,
    pub(crate) metrics: Option<actix_web::dev::ServerHandle>,
    pub(crate) https_addr: Option<SocketAddr>,
    pub(crate) https: Option<actix_web::dev::ServerHandle>,
    pub(crate) rtmps_addr: Option<SocketAddr>,
}

/// Binds every listener the configuration asks for and starts serving on each.
pub(crate) async fn start(context: &Arc<NodeContext>) -> Result<Listeners, StartError> {
    let config = &context.config;
    let mut tasks = Vec::new();

    let mut rtmp_addr = None;
    if config.rtmp.enabled {
        let listener = bind_std("rtmp", config.rtmp.addr)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(|cause| BindError {
            what: "rtmp",
            addr: config.rtmp.addr,
            cause,
        })?;
        rtmp_addr = listener.local_addr().ok();
        tasks.push(actix_rt::spawn(rtmp::server::run(listener, Arc::clone(context), None)));
    }
    let mut rtmps_addr = None;
    if let Some(tls) = context.tls.as_ref().filter(|_| config.rtmp.enabled) {
        let addr = config.tls.rtmps_addr;
        let listener = tokio::net::TcpListener::from_std(bind_std("rtmps", addr)?)
            .map_err(|cause| BindError { what: "rtmps", addr, cause })?;
        rtmps_addr = listener.local_addr().ok();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls.rtmps_config()?));
        let run = rtmp::server::run(listener, Arc::clone(context), Some(acceptor));
        tasks.push(actix_rt::spawn(run));
    }

    // Bound before the HTTP port's server starts, so the pages can name its port.
    let metrics_listener =
        config.metrics.enabled.then(|| bind_std("metrics", config.metrics.addr)).transpose()?;
    let metrics_port =
        metrics_listener.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.port());
    let pages = web::Data::new(ui::Pages::new(config, rtmp_addr.map(|a| a.port()), metrics_port));

    let http_listener = bind_std("http", config.http.addr)?;
    let http_addr = http_listener.local_addr().unwrap_or(config.http.addr);
    let http_server = media_server(context, &pages, http_listener, None)
        .map_err(|cause| BindError { what: "http", addr: config.http.addr, cause })?;
    let http = http_server.handle();
    actix_rt::spawn(http_server);

    let (mut https, mut https_addr) = (None, None);
    if let Some(tls) = &context.tls {
        let addr = config.tls.https_addr;
        let listener = bind_std("https", addr)?;
        https_addr = listener.local_addr().ok();
        let server = media_server(context, &pages, listener, Some(tls.server_config()?))
            .map_err(|cause| BindError { what: "https", addr, cause })?;
        https = Some(server.handle());
        actix_rt::spawn(server);
    }

    let (mut metrics, mut metrics_addr) = (None, None);
    if let Some(listener) = metrics_listener {
        metrics_addr = listener.local_addr().ok();
        let data = web::Data::from(Arc::clone(context));
        let server = HttpServer::new(move || {
            App::new().app_data(data.clone()).configure(http::metrics_routes)
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .map_err(|cause| BindError { what: "metrics", addr: config.metrics.addr, cause })?
        .run();
        metrics = Some(server.handle());
        actix_rt::spawn(server);
    }

    if let Some(task) = context.webrtc.as_ref().and_then(|w| w.start(context.shutdown.clone())) {
        tasks.push(task);
    }

    let mut cluster_addr = None;
    if context.cluster.is_some() {
        let addr = config.cluster.addr;
        let listener = bind_std("cluster", addr)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(|cause| BindError {
            what: "cluster",
            addr,
            cause,
        })?;
        cluster_addr = listener.local_addr().ok();
        tasks.push(actix_rt::spawn(crate::cluster::listen::listen(listener, Arc::clone(context))));
    }

    Ok(Listeners {
        rtmp_addr,
        http_addr,
        metrics_addr,
        cluster_addr,
        tasks,
        http,
        metrics,
        https_addr,
        https,
        rtmps_addr,
    })
}
