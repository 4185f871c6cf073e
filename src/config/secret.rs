//! Secret references: where a credential is read from, never the credential itself.
//!
//! Owns [`SecretSource`] and its resolution. The config holds only references, so it can be
//! hashed, logged as `Debug` and checked on a laptop; a value is read when a caller resolves it
//! (start-up), and must not be stored in the config or put into an error. A value written into
//! the config where a reference belongs is refused without being quoted: the parser's own
//! message would repeat it (`unknown variant \`hunter2\``).

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// Where a secret value is read from.
#[derive(Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
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

/// What the parser says about anything but `{ env = "VAR" }` or `{ file = "/path" }`; it never
/// quotes what it found, which may be the secret itself.
const EXPECTED: &str = "a reference to a secret, { env = \"VAR\" } or { file = \"/path\" }; the secret itself is never written into the config";

impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SourceVisitor)
    }
}

struct SourceVisitor;

impl SourceVisitor {
    fn refuse<T, E: de::Error>(self) -> Result<T, E> {
        Err(E::custom(format!("expected {EXPECTED}")))
    }
}

impl<'de> Visitor<'de> for SourceVisitor {
    type Value = SecretSource;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretSource, E> {
        self.refuse()
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<SecretSource, E> {
        self.refuse()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretSource, E> {
        self.refuse()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretSource, E> {
        self.refuse()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<SecretSource, E> {
        self.refuse()
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<SecretSource, A::Error> {
        self.refuse()
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretSource, A::Error> {
        let source = match map.next_key::<String>()?.as_deref() {
            Some("env") => SecretSource::Env(map.next_value()?),
            Some("file") => SecretSource::File(map.next_value()?),
            _ => return self.refuse(),
        };
        match map.next_key::<String>()? {
            None => Ok(source),
            Some(_) => self.refuse(),
        }
    }
}

impl SecretSource {
    /// Reads the secret, without its trailing line break (`\n` or `\r\n`), the same way from
    /// a file and from the environment (`echo token > file`, `export X=$(cat file)`); any other
    /// whitespace is part of the secret. An empty secret is an error: it is always a mistake
    /// (an unset variable exported as `""`, a file not yet written) that would otherwise
    /// surface only when an incident fires. The error never contains the value.
    pub fn resolve(&self) -> Result<String, String> {
        let value = match self {
            SecretSource::Env(name) => std::env::var(name)
                .map_err(|_| format!("environment variable {name} is not set or not UTF-8"))?,
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        };
        let value = value.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            return Err(match self {
                SecretSource::Env(name) => format!("environment variable {name} is empty"),
                SecretSource::File(path) => format!("{} is empty", path.display()),
            });
        }
        Ok(value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: an empty file or variable was accepted as a secret, so an empty Slack URL or
    /// Kafka password failed only when first used.
    #[test]
    fn an_empty_secret_is_refused_and_only_the_trailing_line_break_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        for empty in ["", "\n", "\r\n"] {
            std::fs::write(&path, empty).unwrap();
            let e = SecretSource::File(path.clone()).resolve().unwrap_err();
            assert!(e.ends_with("is empty"), "{e}");
        }
        std::fs::write(&path, " x \n").unwrap();
        assert_eq!(SecretSource::File(path).resolve().unwrap(), " x ");
    }

    #[derive(Debug, Deserialize)]
    struct Holder {
        #[allow(dead_code)]
        secret: SecretSource,
    }

    /// Regression: a secret written into the config where a reference belongs was quoted back
    /// by the parser (`unknown variant \`hunter2\``), into `check-config` output and the log
    /// of a refused reload.
    #[test]
    fn a_secret_written_inline_is_refused_without_quoting_it() {
        for text in [
            "secret = \"hunter2-inline\"",
            "secret = { hunter2-inline = \"x\" }",
            "secret = { env = \"X\", hunter2-inline = \"x\" }",
            "secret = [\"hunter2-inline\"]",
        ] {
            let err = toml::from_str::<Holder>(text).unwrap_err();
            let msg = err.message();
            assert!(msg.contains("{ env = \"VAR\" }"), "{text}: {msg}");
            assert!(!msg.contains("hunter2"), "{text}: {msg}");
        }
        let ok: Holder = toml::from_str("secret = { file = \"/run/s\" }").unwrap();
        assert_eq!(ok.secret, SecretSource::File("/run/s".into()));
        let ok: Holder = toml::from_str("secret = { env = \"V\" }").unwrap();
        assert_eq!(ok.secret, SecretSource::Env("V".into()));
    }
}
