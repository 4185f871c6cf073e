//! A scripted stand-in for the vendors' APIs: records every answered request and answers each
//! path prefix from a queue of (status, delay), 200 when the queue is empty.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;

/// One request as the vendor saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Answers queued for requests whose path starts with a prefix: (status, delay).
type Script = Vec<(String, VecDeque<(u16, Duration)>)>;

/// Scripted behaviour: per path prefix, a queue of (status, delay) answers; 200 when empty.
#[derive(Default)]
pub struct Vendor {
    pub seen: Mutex<Vec<Seen>>,
    script: Mutex<Script>,
}

impl Vendor {
    pub fn script(&self, path: &str, answers: &[(u16, u64)]) {
        self.script.lock().unwrap().push((
            path.to_string(),
            answers
                .iter()
                .map(|(s, ms)| (*s, Duration::from_millis(*ms)))
                .collect(),
        ));
    }
    pub fn requests(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.starts_with(path))
            .cloned()
            .collect()
    }
}

/// Starts the vendor server on a free port.
pub async fn vendor() -> (Arc<Vendor>, SocketAddr) {
    let v = Arc::new(Vendor::default());
    let state = v.clone();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let v = state.clone();
            async move {
                let path = uri.path().to_string();
                let answer = {
                    let mut script = v.script.lock().unwrap();
                    script
                        .iter_mut()
                        .find(|(p, q)| path.starts_with(p.as_str()) && !q.is_empty())
                        .and_then(|(_, q)| q.pop_front())
                };
                let (status, delay) = answer.unwrap_or((200, Duration::ZERO));
                tokio::time::sleep(delay).await;
                // Record only requests that were answered (a timed-out client has gone).
                v.seen.lock().unwrap().push(Seen {
                    method: method.to_string(),
                    path,
                    headers,
                    body: body.to_vec(),
                });
                (StatusCode::from_u16(status).unwrap(), "{}").into_response()
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (v, addr)
}
