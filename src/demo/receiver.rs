//! The demo's local alert receiver: an HTTP endpoint that checks each alert's Standard Webhooks
//! signature, as a real receiver would, and keeps one line per alert for the summary.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::contain::providers::webhook_signature;

/// Starts the receiver on a free local port; returns its address and the alerts it got, one
/// line each (op, severity, deployment, whether the signature verified).
pub(super) async fn start(key: Vec<u8>) -> std::io::Result<(SocketAddr, Arc<Mutex<Vec<String>>>)> {
    let received = Arc::new(Mutex::new(Vec::new()));
    let store = received.clone();
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (store, key) = (store.clone(), key.clone());
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    let timestamp = header("webhook-timestamp").parse().unwrap_or(0);
                    let expected = webhook_signature(&key, &header("webhook-id"), timestamp, &body);
                    let given = header("webhook-signature");
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    store.lock().expect("receiver lock").push(format!(
                        "{} {} for {} (signature {})",
                        v["op"].as_str().unwrap_or("?"),
                        v["severity"].as_str().unwrap_or("?"),
                        v["incident"]["deployment"].as_str().unwrap_or("?"),
                        if given == expected {
                            "verified"
                        } else {
                            "INVALID"
                        }
                    ));
                    axum::http::StatusCode::NO_CONTENT
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, received))
}
