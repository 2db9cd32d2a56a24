//! The HTTP listener: hyper 1 with axum's routing on one small tokio runtime on its own thread,
//! beside the shards. Today it serves the admin API (`POST /api/<command>`, admin.rs); metrics,
//! WebSocket, BOSH and upload will join it here.
//!
//! This module owns everything a hostile HTTP client can push on: a cap on connections at once
//! (`admin.connections_max`, beyond it a connection is closed at accept), a bounded request
//! head (`HTTP_HEAD_BYTES_MAX`) that must arrive within `admin.header_timeout_ms`, a body
//! whose announced length is checked against `HTTP_BODY_BYTES_MAX` before a byte of it is
//! read or allocated and which must arrive within `admin.body_timeout_ms`, a `Host` that must
//! name this server (no DNS rebinding), `Content-Type: application/json` (a browser cannot
//! send it cross-site without a preflight, so no CSRF through a simple form post), and the
//! bearer token. It never blocks a shard: requests reach shards through their bounded
//! inboxes, and password hashing runs on the hashing pool. It does not know what the commands
//! do (admin.rs does).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use confab_core::limits::{HTTP_BODY_BYTES_MAX, HTTP_HEAD_BYTES_MAX};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::shard::Shared;

/// Milliseconds an admin command may take (waiting for shards, hashing a password).
pub const ADMIN_COMMAND_TIMEOUT_MS: u64 = 30_000;

/// What every request handler needs.
struct Http {
    shared: Arc<Shared>,
    /// `Host` values this server answers to, lowercased, with and without the port.
    hosts: Vec<String>,
}

/// The address of the peer of a connection, attached to each of its requests.
#[derive(Clone, Copy)]
struct Peer(SocketAddr);

/// Binds `address` and serves HTTP on a dedicated thread with its own tokio runtime. Binding
/// happens here, so a port in use is an error at start-up.
pub fn start(address: SocketAddr, shared: Arc<Shared>) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
    let http = Arc::new(Http { hosts: allowed_hosts(local, &shared.config.domain, &shared.config.admin.hosts), shared });
    std::thread::Builder::new().name("http".into()).spawn(move || {
        runtime.block_on(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => serve(listener, http).await,
                Err(error) => tracing::error!(%error, "HTTP listener unusable"),
            }
        });
    })?;
    tracing::info!(address = %local, "admin API listening");
    Ok(())
}

async fn serve(listener: tokio::net::TcpListener, http: Arc<Http>) {
    let admin = &http.shared.config.admin;
    let permits = Arc::new(Semaphore::new(admin.connections_max));
    let header_timeout = Duration::from_millis(admin.header_timeout_ms);
    let router = Router::new().route("/api/{command}", axum::routing::any(api)).fallback(not_found).with_state(http.clone());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "HTTP connection refused: admin.connections_max reached");
            drop(stream);
            continue;
        };
        let router = router.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(Peer(peer));
                let mut router = router.clone();
                async move { tower_service::Service::call(&mut router, request.map(Body::new)).await }
            });
            // One request per connection: a kept-alive idle connection would hold one of the
            // admin.connections_max places for as long as its client liked.
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(HTTP_HEAD_BYTES_MAX)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// `POST /api/<command>`: the checks, in the order that spends the least on a hostile client.
async fn api(State(http): State<Arc<Http>>, request: Request) -> Response {
    let peer = request.extensions().get::<Peer>().map(|peer| peer.0);
    let headers = request.headers();
    // RFC 9112 §3.2: exactly one Host, else 400; one that names another server, 421.
    let mut host = headers.get_all(header::HOST).iter();
    let (Some(host), None) = (host.next(), host.next()) else {
        return error(StatusCode::BAD_REQUEST, 40, "One Host header is required");
    };
    if !host_allowed(host, &http.hosts) {
        return error(StatusCode::MISDIRECTED_REQUEST, 40, "Unknown Host");
    }
    if !authorized(headers, http.shared.config.admin.token.as_deref(), peer) {
        return error(StatusCode::UNAUTHORIZED, 10, "You are not authorized to call this command.");
    }
    if request.method() != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, 40, "Use POST");
    }
    if !is_json(headers) {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, 40, "Content-Type must be application/json");
    }
    let announced = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|length| length > HTTP_BODY_BYTES_MAX as u64) {
        return error(StatusCode::PAYLOAD_TOO_LARGE, 40, "Request body too large");
    }
    let command = request.uri().path().trim_start_matches("/api/").to_owned();
    let timeout = Duration::from_millis(http.shared.config.admin.body_timeout_ms);
    let body = match tokio::time::timeout(timeout, axum::body::to_bytes(request.into_body(), HTTP_BODY_BYTES_MAX)).await {
        Err(_) => return error(StatusCode::REQUEST_TIMEOUT, 40, "Request body too slow"),
        // A body without a length that grows past the bound, or a broken one.
        Ok(Err(_)) => return error(StatusCode::PAYLOAD_TOO_LARGE, 40, "Request body too large or incomplete"),
        Ok(Ok(body)) => body,
    };
    let args = if body.iter().all(u8::is_ascii_whitespace) { Ok(json!({})) } else { serde_json::from_slice::<Value>(&body) };
    let Ok(Value::Object(args)) = args else {
        return error(StatusCode::BAD_REQUEST, 31, "Body must be a JSON object");
    };
    tracing::info!(command, ?peer, "admin API call");
    // A shard that does not answer must not hold the connection (and its place) for ever.
    let answer =
        tokio::time::timeout(Duration::from_millis(ADMIN_COMMAND_TIMEOUT_MS), crate::admin::call(&command, &args, &http.shared)).await;
    let Ok((status, value)) = answer else {
        return error(StatusCode::SERVICE_UNAVAILABLE, 1, "The server did not answer in time");
    };
    json_response(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &value)
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, 40, "Unknown path; use /api/<command>")
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    json_response(status, &json!({"status": "error", "code": code, "message": message}))
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

/// The `Host` values the API answers to: its listen address, `localhost` and the domain (each
/// with and without the port), and the configured extra names.
fn allowed_hosts(local: SocketAddr, domain: &str, extra: &[String]) -> Vec<String> {
    let port = local.port();
    // A wildcard listen address (0.0.0.0, [::]) is no name of this server: a page on another
    // site could reach it by that literal.
    let ip = match local {
        _ if local.ip().is_unspecified() => None,
        SocketAddr::V4(v4) => Some(v4.ip().to_string()),
        SocketAddr::V6(v6) => Some(format!("[{}]", v6.ip())),
    };
    let mut hosts = Vec::new();
    for name in ip.iter().map(String::as_str).chain(["localhost", domain]).chain(extra.iter().map(String::as_str)) {
        let name = name.to_ascii_lowercase();
        if !name.contains(':') || name.ends_with(']') {
            hosts.push(format!("{name}:{port}"));
        }
        hosts.push(name);
    }
    hosts
}

/// Does a request's `Host` name this server?
fn host_allowed(host: &axum::http::HeaderValue, hosts: &[String]) -> bool {
    host.to_str().is_ok_and(|host| hosts.iter().any(|allowed| allowed.eq_ignore_ascii_case(host.trim())))
}

/// With a token configured, every caller (loopback included) must present it; without one,
/// only loopback callers are trusted.
fn authorized(headers: &HeaderMap, token: Option<&str>, peer: Option<SocketAddr>) -> bool {
    let Some(token) = token else { return peer.is_some_and(|peer| peer.ip().is_loopback()) };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `application/json`, parameters (charset) allowed.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn hosts_name_this_server_only() {
        let hosts = allowed_hosts("127.0.0.1:5280".parse().expect("address"), "example.com", &["chat.internal".into()]);
        let value = |host: &str| HeaderValue::from_str(host).expect("header");
        for good in ["127.0.0.1:5280", "127.0.0.1", "localhost:5280", "LOCALHOST", "example.com:5280", "chat.internal"] {
            assert!(host_allowed(&value(good), &hosts), "{good}");
        }
        for bad in ["evil.example", "127.0.0.1:80", "example.com.evil.example", ""] {
            assert!(!host_allowed(&value(bad), &hosts), "{bad}");
        }
        let v6 = allowed_hosts("[::1]:5280".parse().expect("address"), "example.com", &[]);
        assert!(v6.contains(&"[::1]:5280".to_owned()) && v6.contains(&"[::1]".to_owned()), "{v6:?}");
        let wildcard = allowed_hosts("0.0.0.0:5280".parse().expect("address"), "example.com", &[]);
        assert!(!wildcard.iter().any(|host| host.starts_with("0.0.0.0")), "{wildcard:?}");
    }

    #[test]
    fn json_and_tokens() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        assert!(is_json(&headers));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_json(&headers));
        let loopback = Some("127.0.0.1:1".parse().expect("address"));
        let remote = Some("192.0.2.1:1".parse().expect("address"));
        assert!(authorized(&HeaderMap::new(), None, loopback));
        assert!(!authorized(&HeaderMap::new(), None, remote));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer s3cret"));
        assert!(authorized(&headers, Some("s3cret"), remote));
        assert!(!authorized(&headers, Some("other"), loopback), "a configured token binds loopback too");
    }
}
