//! Secret references: where a credential is read from, never the credential itself.
//!
//! Owns [`SecretSource`] and its resolution. The config holds only references, so it can be
//! hashed, logged as `Debug` and checked on a laptop; a value is read when a caller resolves it
//! (start-up), and must not be stored in the config or put into an error.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where a secret value is read from.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SecretSource {
    /// Read the named environment variable.
    Env(String),
    /// Read the file.
    File(PathBuf),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(name) => write!(f, "env:{name}"),
            SecretSource::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

impl SecretSource {
    /// Reads the secret, without its trailing line break (`\n` or `\r\n`), the same way from
    /// a file and from the environment (`echo token > file`, `export X=$(cat file)`); any other
    /// whitespace is part of the secret. The error never contains the value.
    pub fn resolve(&self) -> Result<String, String> {
        let value = match self {
            SecretSource::Env(name) => std::env::var(name)
                .map_err(|_| format!("environment variable {name} is not set or not UTF-8"))?,
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        };
        Ok(value.trim_end_matches(['\n', '\r']).to_string())
    }
}
