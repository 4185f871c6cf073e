//! Who is calling: bearer tokens to identities, identities to roles.
//!
//! Owns the identities the admin API knows (`admin.operators`, and `containment.admin_token`
//! as `admin` with every role) and the one rule of a protected route: no identity configured at
//! all is 403, a missing, unknown or wrong token is 401, a known token without the role the route
//! needs is 403. Tokens are compared in constant time against every identity (no early exit, so
//! the time taken says neither how much of a guess was right nor which identity it was near),
//! and never logged, echoed or stored: handlers get the [`Identity`], which holds no token.

use std::collections::BTreeSet;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::config::{Config, ConfigError, ResolvedOperator, Role};

/// The answer a refused request gets (boxed: a response is large, and refusals are rare).
pub type Refusal = Box<Response>;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// The name audit records and alerts carry.
    pub name: String,
    /// What it may do.
    pub roles: BTreeSet<Role>,
}

impl Identity {
    /// True when it holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Every identity with its token.
#[derive(Default)]
pub struct Identities {
    entries: Vec<(String, Identity)>,
}

impl Identities {
    /// The identities of `config`, their tokens read now (start-up): refuses unreadable,
    /// short and shared tokens (see [`crate::config::read_tokens`]).
    pub fn from_config(config: &Config) -> Result<Identities, ConfigError> {
        let resolved = crate::config::read_tokens(
            &config.admin.operators,
            config.containment.admin_token.as_ref(),
        )?;
        Ok(Identities::new(resolved))
    }

    /// From identities already read.
    pub fn new(resolved: Vec<ResolvedOperator>) -> Identities {
        Identities {
            entries: resolved
                .into_iter()
                .map(|r| {
                    (
                        r.token,
                        Identity {
                            name: r.name,
                            roles: r.roles,
                        },
                    )
                })
                .collect(),
        }
    }

    /// The caller of a route open to any identity (`/v1/whoami`), or the refusal to send.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<&Identity, Refusal> {
        if self.entries.is_empty() {
            return Err(refusal(
                StatusCode::FORBIDDEN,
                "this route needs an identity: configure admin.operators (or containment.admin_token)",
            ));
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let mut found = None;
        for (token, identity) in &self.entries {
            if constant_time_eq(given.as_bytes(), token.as_bytes()) && found.is_none() {
                found = Some(identity);
            }
        }
        found.ok_or_else(|| {
            Box::new(
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    Json(serde_json::json!({ "error": "missing, unknown or wrong bearer token" })),
                )
                    .into_response(),
            )
        })
    }

    /// The caller of a route that needs one of `roles`, or the refusal to send.
    pub fn require(&self, headers: &HeaderMap, roles: &[Role]) -> Result<&Identity, Refusal> {
        let identity = self.authenticate(headers)?;
        if roles.iter().any(|r| identity.has(*r)) {
            return Ok(identity);
        }
        let wanted: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(refusal(
            StatusCode::FORBIDDEN,
            format!(
                "`{}` does not hold the {} role this route needs",
                identity.name,
                wanted.join(" or ")
            ),
        ))
    }
}

fn refusal(status: StatusCode, message: impl Into<String>) -> Refusal {
    Box::new((status, Json(serde_json::json!({ "error": message.into() }))).into_response())
}

/// Compares without an early exit, so the time taken does not reveal how much of a guess was
/// right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(!x);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    fn identities() -> Identities {
        let op = |name: &str, token: &str, roles: &[Role]| ResolvedOperator {
            name: name.into(),
            roles: roles.iter().copied().collect(),
            token: token.into(),
        };
        Identities::new(vec![
            op("vera", "viewer-token-000000001", &[Role::Viewer]),
            op("alice", "approver-token-0000001", &[Role::Approver]),
        ])
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn unknown_is_401_known_without_the_role_403_and_nothing_configured_403() {
        let ids = identities();
        let status =
            |r: Result<&Identity, Refusal>| r.map(|i| i.name.clone()).map_err(|e| e.status());
        assert_eq!(
            status(ids.require(&bearer("approver-token-0000001"), &[Role::Approver])),
            Ok("alice".into())
        );
        assert_eq!(
            status(ids.require(&bearer("viewer-token-000000001"), &[Role::Approver])),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            status(ids.require(&bearer("approver-token-0000002"), &[Role::Viewer])),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(ids.authenticate(&HeaderMap::new())),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(Identities::default().authenticate(&bearer("x"))),
            Err(StatusCode::FORBIDDEN)
        );
    }
}
