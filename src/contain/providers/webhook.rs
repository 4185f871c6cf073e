//! Signing of the generic webhook, as Standard Webhooks (<https://www.standardwebhooks.com/>)
//! specify, so that any receiver can check with a stock library that a request came from
//! driftd, unaltered and recently.
//!
//! Every request carries `webhook-id` (one per action, the same on each retry and after a
//! restart, so a receiver can deduplicate), `webhook-timestamp` (Unix seconds by driftd's clock
//! when the attempt was made) and `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `{id}.{timestamp}.{body}` — the id and the time are signed with the body, so a captured
//! request cannot be replayed later or under another id without the receiver noticing.
//!
//! Owns the secret's format, the id and the signature. It must not send anything: the provider
//! puts [`headers`] on its request. `docs/webhooks.md` tells receivers how to verify.

use base64::alphabet::STANDARD;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// What a signing secret starts with; the base64 of the key follows.
pub const SECRET_PREFIX: &str = "whsec_";
/// The shortest key accepted, in bytes (the specification asks for 24 to 64).
pub const MIN_KEY_BYTES: usize = 24;

/// Standard base64, with or without padding, as the reference libraries accept it.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The HMAC key of a signing secret: `whsec_` and the base64 of at least [`MIN_KEY_BYTES`]
/// random bytes, exactly what a receiver passes to its Standard Webhooks library. Anything else
/// is refused rather than guessed at: the reference libraries base64-decode a secret even
/// without the prefix, so a plain password would be read as a different key by the receiver
/// than by driftd, and every request would fail to verify. The error never contains the secret.
pub fn signing_key(secret: &str) -> Result<Vec<u8>, String> {
    let generate = format!(
        "generate one with `echo \"{SECRET_PREFIX}$(openssl rand -base64 32)\"` and give the same string to the receiver"
    );
    let Some(encoded) = secret.strip_prefix(SECRET_PREFIX) else {
        return Err(format!(
            "a webhook secret must be `{SECRET_PREFIX}` followed by the base64 of a random key (the Standard Webhooks form); {generate}"
        ));
    };
    let key = BASE64
        .decode(encoded)
        .map_err(|_| format!("the part after `{SECRET_PREFIX}` is not valid base64; {generate}"))?;
    if key.len() < MIN_KEY_BYTES {
        return Err(format!(
            "the key is {} bytes long, fewer than {MIN_KEY_BYTES}; {generate}",
            key.len()
        ));
    }
    Ok(key)
}

/// The `webhook-id` of the action whose idempotency key is `action_key`: `msg_` and the first
/// 16 bytes of its SHA-256, in hex. The key names the incident, target and operation and is
/// persisted, so the id is the same on every retry and after a restart, and differs between
/// actions; it carries nothing of the payload.
pub fn webhook_id(action_key: &str) -> String {
    format!("msg_{}", hex::encode(&Sha256::digest(action_key)[..16]))
}

/// The `webhook-signature` header value: `v1,` and the base64 HMAC-SHA256, under `key`, of
/// `{id}.{timestamp}.{body}`.
pub fn webhook_signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// The three Standard Webhooks headers of one attempt of the action `action_key`, made at
/// `timestamp` (Unix seconds).
pub fn headers(
    key: &[u8],
    action_key: &str,
    timestamp: i64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    let id = webhook_id(action_key);
    let signature = webhook_signature(key, &id, timestamp, body);
    [
        ("webhook-id", id),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signing vector of the reference libraries (standard-webhooks, `TestWebhookSign` in
    /// the Go library and its equivalents).
    #[test]
    fn the_reference_vector_signs_alike() {
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            webhook_signature(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    /// Regression: the signature covered the body only, so a captured request could be
    /// replayed at any later time. The id and the timestamp are signed with it.
    #[test]
    fn the_id_and_the_time_are_signed_with_the_body() {
        let key = [7u8; 32];
        let body = br#"{"op":"contain"}"#;
        let [(_, id), (_, ts), (_, sig)] =
            headers(&key, "svc:v1/hook/contain", 1_700_000_000, body);
        assert_eq!(ts, "1700000000");
        assert_eq!(sig, webhook_signature(&key, &id, 1_700_000_000, body));
        assert_ne!(sig, webhook_signature(&key, &id, 1_700_000_001, body));
        assert_ne!(
            sig,
            webhook_signature(&key, "msg_other", 1_700_000_000, body)
        );
        assert_ne!(sig, webhook_signature(&key, &id, 1_700_000_000, b"{}"));
    }

    #[test]
    fn the_id_is_stable_per_action_and_differs_between_actions() {
        let id = webhook_id("svc:v1/hook/contain");
        assert_eq!(id, webhook_id("svc:v1/hook/contain"));
        assert_ne!(id, webhook_id("svc:v1/hook/resolve"));
        assert_eq!(id.len(), "msg_".len() + 32);
        assert!(id.starts_with("msg_"));
    }

    #[test]
    fn only_the_standard_secret_form_is_accepted() {
        assert_eq!(
            signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .unwrap()
                .len(),
            24
        );
        // Unpadded base64 too, as the reference libraries accept it.
        let unpadded = format!("whsec_{}", BASE64.encode([1u8; 32]).trim_end_matches('='));
        assert_eq!(signing_key(&unpadded).unwrap(), [1u8; 32]);
        for (secret, why) in [
            ("hunter2-hunter2-hunter2-hunter2", "must be `whsec_`"),
            ("whsec_not base64!", "not valid base64"),
            ("whsec_c2hvcnQ=", "is 5 bytes long"),
        ] {
            let e = signing_key(secret).unwrap_err();
            assert!(e.contains(why), "{secret}: {e}");
            assert!(!e.contains(secret), "the error shows the secret: {e}");
        }
    }
}
