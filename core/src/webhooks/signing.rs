//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed
//! with the base64-decoded part of a `whsec_…` secret.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// Random bytes in a fresh secret (the specification asks for 24 to 64).
const SECRET_BYTES: usize = 32;

/// A signing secret, `whsec_` + base64. Never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A fresh secret from the operating system's CSPRNG (through `rand`'s thread RNG).
    pub fn generate() -> Self {
        let mut bytes = [0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(format!("whsec_{}", STANDARD.encode(bytes)))
    }

    /// A secret as stored; `None` unless it is `whsec_` + valid base64.
    pub fn parse(text: &str) -> Option<Self> {
        let key = text.strip_prefix("whsec_")?;
        STANDARD.decode(key).ok().filter(|k| !k.is_empty())?;
        Some(Self(text.to_string()))
    }

    /// The secret itself: to store it, or to show it once to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn key(&self) -> Vec<u8> {
        // Checked by `parse` and made valid by `generate`.
        STANDARD
            .decode(self.0.trim_start_matches("whsec_"))
            .unwrap_or_default()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The secrets that sign an endpoint's (or a tenant's) deliveries: the current one, and the one
/// it replaced until `previous_expires_at`, so that receivers can switch without losing any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeys {
    pub current: Secret,
    pub previous: Option<Secret>,
    pub previous_expires_at: Option<DateTime<Utc>>,
}

impl SigningKeys {
    /// Keys with one fresh secret.
    pub fn generate() -> Self {
        Self {
            current: Secret::generate(),
            previous: None,
            previous_expires_at: None,
        }
    }

    /// The `webhook-signature` header: one `v1,<sig>` per secret in force at `now`, the current
    /// one first, separated by spaces.
    pub fn signature_header(
        &self,
        id: &str,
        timestamp: i64,
        body: &str,
        now: DateTime<Utc>,
    ) -> String {
        let mut header = sign(&self.current, id, timestamp, body);
        if let (Some(previous), Some(until)) = (&self.previous, self.previous_expires_at)
            && until > now
        {
            header.push(' ');
            header.push_str(&sign(previous, id, timestamp, body));
        }
        header
    }
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
pub fn sign(secret: &Secret, id: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret.key()).expect("any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_specifications_test_vector() {
        // From the Standard Webhooks specification (and checked with Python's hmac).
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            sign(
                &secret,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn fresh_secrets_are_distinct_valid_and_hidden_from_debug() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert_ne!(a, b);
        assert!(Secret::parse(a.expose()).is_some());
        assert_eq!(a.key().len(), SECRET_BYTES);
        assert!(!format!("{a:?}").contains(a.expose()));
        assert!(Secret::parse("whsec_").is_none());
        assert!(Secret::parse("nope").is_none());
    }

    #[test]
    fn the_previous_secret_signs_only_until_it_expires() {
        let now = Utc::now();
        let keys = SigningKeys {
            current: Secret::generate(),
            previous: Some(Secret::generate()),
            previous_expires_at: Some(now + chrono::TimeDelta::hours(1)),
        };
        let both = keys.signature_header("msg_1", 1, "{}", now);
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(&keys.current, "msg_1", 1, "{}"));
        assert_eq!(
            parts[1],
            sign(keys.previous.as_ref().unwrap(), "msg_1", 1, "{}")
        );
        let later = keys.signature_header("msg_1", 1, "{}", now + chrono::TimeDelta::hours(2));
        assert_eq!(later, parts[0]);
    }
}
