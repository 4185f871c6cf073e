//! `[[admin.operators]]`: the named identities that may use the admin API, and their roles.
//!
//! Owns the schema of an operator (a name, a reference to its bearer token, its roles), the
//! roles themselves, and the rules a list of operators must meet: names unique and printable,
//! tokens referenced once each, roles known, and none named like the identity of
//! `containment.admin_token`. Reading the tokens (their length, two operators sharing one
//! value) happens at start-up in [`read_tokens`], never in validation, so `check-config` on a
//! laptop needs no production secrets. It must not authenticate a request: `admin::auth` does.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, SecretSource};

/// The name the single `containment.admin_token` authenticates as; it holds every role.
pub const ADMIN_TOKEN_IDENTITY: &str = "admin";

/// The shortest bearer token driftd accepts (admin token and operator tokens alike).
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// What an identity may do on the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read the audit log, the latches and the approvals.
    Viewer,
    /// Contain by hand, request a release.
    Operator,
    /// Approve releases and promotions (and request a release).
    Approver,
}

impl Role {
    /// Every role, as the admin token holds them.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Approver];

    /// The spelling in the config, the API and the audit log (the same as its serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Approver => "approver",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// One named operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// The identity every audit record and alert of this operator's requests names: 1–64
    /// characters of `[A-Za-z0-9._@-]`.
    pub name: String,
    /// This operator's own bearer token, from `{ env = … }` or `{ file = … }` (never written
    /// inline): at least 16 characters, shared with no other operator.
    pub token: SecretSource,
    /// `viewer`, `operator` and/or `approver`; at least one. Kept as written so that an unknown
    /// role is refused with the field named, not by the parser.
    pub roles: Vec<String>,
}

impl OperatorConfig {
    /// The roles (validated: every entry names one).
    pub fn roles(&self) -> BTreeSet<Role> {
        self.roles.iter().filter_map(|r| Role::parse(r)).collect()
    }
}

fn is_identity(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
}

/// The `admin.operators` rules. `admin_token` is `containment.admin_token`, whose identity
/// no operator may take and whose reference no operator may share.
pub(super) fn validate(
    operators: &[OperatorConfig],
    admin_token: Option<&SecretSource>,
) -> Result<(), ConfigError> {
    let mut names = BTreeSet::new();
    for (n, o) in operators.iter().enumerate() {
        let field = |f: &str| format!("admin.operators[{n}].{f}");
        if !is_identity(&o.name) {
            return Err(invalid(
                field("name"),
                "must be 1-64 characters of letters, digits, `.`, `_`, `@` and `-`",
            ));
        }
        if !names.insert(o.name.as_str()) {
            return Err(invalid(
                field("name"),
                format!(
                    "`{}` names two operators; each identity is one person or system",
                    o.name
                ),
            ));
        }
        if admin_token.is_some() && o.name == ADMIN_TOKEN_IDENTITY {
            return Err(invalid(
                field("name"),
                format!("`{ADMIN_TOKEN_IDENTITY}` is the identity of containment.admin_token; choose another name"),
            ));
        }
        if o.roles.is_empty() {
            return Err(invalid(
                field("roles"),
                "must list at least one of viewer, operator, approver",
            ));
        }
        if let Some(bad) = o.roles.iter().find(|r| Role::parse(r).is_none()) {
            return Err(invalid(
                field("roles"),
                format!("`{bad}` is not a role; roles are viewer, operator and approver"),
            ));
        }
        let shared = operators[..n]
            .iter()
            .position(|earlier| earlier.token == o.token)
            .map(|i| format!("admin.operators[{i}].token"))
            .or_else(|| {
                (admin_token == Some(&o.token)).then(|| "containment.admin_token".to_string())
            });
        if let Some(other) = shared {
            return Err(invalid(
                field("token"),
                format!("refers to the same secret as {other}; every identity needs its own token, or the audit cannot tell them apart"),
            ));
        }
    }
    Ok(())
}

/// A token read from `source` for the config key `property`, refused when it cannot be read
/// or is shorter than [`MIN_ADMIN_TOKEN_LEN`] (an empty file would otherwise let anyone holding
/// an empty bearer token act).
pub fn read_token(property: &str, source: &SecretSource) -> Result<String, ConfigError> {
    let token = source.resolve().map_err(|reason| ConfigError::Secret {
        property: property.into(),
        reason,
    })?;
    if token.chars().count() < MIN_ADMIN_TOKEN_LEN {
        return Err(ConfigError::WeakSecret {
            property: property.into(),
            reason: format!("it has {} characters", token.chars().count()),
            min: MIN_ADMIN_TOKEN_LEN,
        });
    }
    Ok(token)
}

/// One identity with its token read.
pub struct ResolvedOperator {
    /// The identity.
    pub name: String,
    /// Its roles.
    pub roles: BTreeSet<Role>,
    /// Its bearer token (a secret: never logged, never shown).
    pub token: String,
}

impl std::fmt::Debug for ResolvedOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedOperator")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// Every identity of the config with its token read (at start-up): `containment.admin_token`
/// as [`ADMIN_TOKEN_IDENTITY`] with every role, then `admin.operators`. Refuses a short token
/// and two identities whose tokens have the same value (different references to one secret),
/// naming the fields, never the value.
pub fn read_tokens(
    operators: &[OperatorConfig],
    admin_token: Option<&SecretSource>,
) -> Result<Vec<ResolvedOperator>, ConfigError> {
    let mut out: Vec<(String, ResolvedOperator)> = Vec::new();
    if let Some(source) = admin_token {
        out.push((
            "containment.admin_token".into(),
            ResolvedOperator {
                name: ADMIN_TOKEN_IDENTITY.into(),
                roles: Role::ALL.into_iter().collect(),
                token: read_token("containment.admin_token", source)?,
            },
        ));
    }
    for (n, o) in operators.iter().enumerate() {
        let property = format!("admin.operators[{n}].token");
        let token = read_token(&property, &o.token)?;
        if let Some((other, _)) = out.iter().find(|(_, r)| r.token == token) {
            return Err(ConfigError::WeakSecret {
                property,
                reason: format!(
                    "it has the same value as {other}; every identity needs its own token"
                ),
                min: MIN_ADMIN_TOKEN_LEN,
            });
        }
        out.push((
            property,
            ResolvedOperator {
                name: o.name.clone(),
                roles: o.roles(),
                token,
            },
        ));
    }
    Ok(out.into_iter().map(|(_, r)| r).collect())
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!(
            "[containment]\nadmin_token = {{ env = \"ADMIN\" }}\n\n{extra}"
        ))
    }

    fn op(name: &str, token: &str, roles: &str) -> String {
        format!("[[admin.operators]]\nname = \"{name}\"\ntoken = {{ file = \"{token}\" }}\nroles = {roles}\n")
    }

    #[test]
    fn operators_load_with_their_roles() {
        let c = parse(&format!(
            "{}{}",
            op("alice", "/run/a", "[\"approver\", \"viewer\"]"),
            op("bob", "/run/b", "[\"operator\"]")
        ))
        .unwrap();
        assert_eq!(c.admin.operators.len(), 2);
        assert_eq!(
            c.admin.operators[0].roles(),
            [Role::Viewer, Role::Approver].into_iter().collect()
        );
    }

    #[test]
    fn mistakes_are_refused_with_the_field_named() {
        for (extra, field, words) in [
            (
                op("alice", "/a", "[\"viewer\"]") + &op("alice", "/b", "[\"viewer\"]"),
                "admin.operators[1].name",
                "names two operators",
            ),
            (
                op("alice", "/a", "[\"viewer\"]") + &op("bob", "/a", "[\"viewer\"]"),
                "admin.operators[1].token",
                "admin.operators[0].token",
            ),
            (
                op("alice", "/a", "[\"boss\"]"),
                "admin.operators[0].roles",
                "`boss` is not a role",
            ),
            (
                op("alice", "/a", "[]"),
                "admin.operators[0].roles",
                "at least one",
            ),
            (
                op("admin", "/a", "[\"viewer\"]"),
                "admin.operators[0].name",
                "containment.admin_token",
            ),
            (
                op("al ice", "/a", "[\"viewer\"]"),
                "admin.operators[0].name",
                "1-64 characters",
            ),
            (
                "[[admin.operators]]\nname = \"x\"\ntoken = { env = \"ADMIN\" }\nroles = [\"viewer\"]\n".into(),
                "admin.operators[0].token",
                "containment.admin_token",
            ),
        ] {
            let e = parse(&extra).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains(words), "{extra}: {e}");
        }
    }

    #[test]
    fn an_inline_token_or_an_unknown_key_is_refused_without_quoting_it() {
        let e = parse("[[admin.operators]]\nname = \"a\"\ntoken = \"hunter2-hunter2-hunter2\"\nroles = [\"viewer\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("{ env = \\\"VAR\\\" }") || e.contains("{ env = \"VAR\" }"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        let e = parse("[[admin.operators]]\nname = \"a\"\ntoken = { env = \"A\" }\nroles = [\"viewer\"]\nrole = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("role"), "{e}");
    }

    #[test]
    fn short_and_shared_token_values_are_refused_at_start_up_without_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, value: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, format!("{value}\n")).unwrap();
            SecretSource::File(p)
        };
        let operator = |name: &str, token: SecretSource| OperatorConfig {
            name: name.into(),
            token,
            roles: vec!["viewer".into()],
        };
        let admin = file("admin", "admin-secret-value-0001");
        let ok = read_tokens(
            &[operator("alice", file("a", "alice-secret-value-001"))],
            Some(&admin),
        )
        .unwrap();
        assert_eq!(ok[0].name, ADMIN_TOKEN_IDENTITY);
        assert_eq!(ok[0].roles.len(), 3);
        assert_eq!(ok[1].name, "alice");
        assert!(!format!("{ok:?}").contains("secret-value"));

        let e = read_tokens(&[operator("alice", file("s", "short-secret"))], None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("admin.operators[0].token") && e.contains("12 characters"),
            "{e}"
        );
        assert!(!e.contains("short-secret"), "{e}");

        let e = read_tokens(
            &[operator("alice", file("copy", "admin-secret-value-0001"))],
            Some(&admin),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("admin.operators[0].token") && e.contains("containment.admin_token"),
            "{e}"
        );
        assert!(!e.contains("admin-secret-value"), "{e}");
    }
}
