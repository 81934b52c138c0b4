//! The API key format: `mik_<8 lowercase hex>_<32 base62>`.
//!
//! The first part (`mik_1a2b3c4d`) is the key's *prefix*: stored in clear, shown in lists and
//! logs, it names a key without giving it away. The whole key is shown once, when it is made;
//! only its SHA-256 is stored, and a request is authenticated by looking that hash up.

use std::fmt;

use rand::Rng;
use rand::distr::Alphanumeric;

use crate::storage::sha256_hex;

/// What every key starts with.
pub const KEY_START: &str = "mik_";
/// Lowercase hex digits after [`KEY_START`].
const PREFIX_HEX_LEN: usize = 8;
/// Base62 characters of the secret part (about 190 bits).
const SECRET_LEN: usize = 32;
/// `mik_` + 8 hex.
const PREFIX_LEN: usize = KEY_START.len() + PREFIX_HEX_LEN;
/// The whole key: prefix, `_`, secret.
const KEY_LEN: usize = PREFIX_LEN + 1 + SECRET_LEN;

/// A whole API key: freshly made, or as a client sent it. Its `Debug` shows the prefix only.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

/// A string that is not an API key (wrong start, length or characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an API key: keys look like mik_<8 lowercase hex digits>_<32 letters and digits>")]
pub struct MalformedKey;

impl ApiKeySecret {
    /// A new key from the thread's CSPRNG (ChaCha, seeded by the operating system).
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let prefix: [u8; PREFIX_HEX_LEN / 2] = rng.random();
        let secret: String = (&mut rng)
            .sample_iter(Alphanumeric)
            .take(SECRET_LEN)
            .map(char::from)
            .collect();
        Self(format!("{KEY_START}{}_{secret}", hex::encode(prefix)))
    }

    /// Checks the format of a key a client sent (surrounding whitespace is ignored).
    pub fn parse(text: &str) -> Result<Self, MalformedKey> {
        let text = text.trim();
        let well_formed = text.len() == KEY_LEN
            && text.starts_with(KEY_START)
            && text[KEY_START.len()..PREFIX_LEN]
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && text.as_bytes()[PREFIX_LEN] == b'_'
            && text[PREFIX_LEN + 1..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric());
        if well_formed {
            Ok(Self(text.to_string()))
        } else {
            Err(MalformedKey)
        }
    }

    /// The shown prefix, `mik_1a2b3c4d`.
    pub fn prefix(&self) -> &str {
        &self.0[..PREFIX_LEN]
    }

    /// The SHA-256 (lowercase hex) that is stored and looked up.
    pub fn sha256(&self) -> String {
        sha256_hex(self.0.as_bytes())
    }

    /// The whole key, to show once to the administrator who made it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeySecret({}_…)", self.prefix())
    }
}

/// The prefix a text names: a prefix itself (`mik_1a2b3c4d`) or a whole key.
pub fn prefix_of(text: &str) -> Result<String, MalformedKey> {
    let text = text.trim();
    if text.len() == PREFIX_LEN {
        // A prefix is a key's start: check it as the start of a well-formed key.
        let padded = format!("{text}_{}", "0".repeat(SECRET_LEN));
        return ApiKeySecret::parse(&padded).map(|k| k.prefix().to_string());
    }
    ApiKeySecret::parse(text).map(|k| k.prefix().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_format_and_differ() {
        let a = ApiKeySecret::generate();
        let b = ApiKeySecret::generate();
        assert_ne!(a, b);
        let text = a.expose();
        assert_eq!(text.len(), 45, "{text}");
        assert_eq!(ApiKeySecret::parse(text).unwrap(), a);
        assert!(a.prefix().starts_with("mik_") && a.prefix().len() == 12);
        assert_eq!(a.sha256().len(), 64);
        assert_ne!(a.sha256(), b.sha256());
    }

    #[test]
    fn malformed_keys_are_refused() {
        let good = ApiKeySecret::generate().expose().to_string();
        assert!(ApiKeySecret::parse(&format!("  {good}\n")).is_ok());
        let upper_hex = good.replacen(&good[4..12], &good[4..12].to_uppercase(), 1);
        for bad in [
            "",
            "mik_",
            &good[..44],
            &format!("{good}x"),
            &good.replacen("mik_", "mok_", 1),
            &good.replacen('_', "-", 2),
            &format!("{}!{}", &good[..20], &good[21..]),
            "mik_zzzzzzzz_0123456789abcdefghijklmnopqrstuv",
        ] {
            assert_eq!(ApiKeySecret::parse(bad), Err(MalformedKey), "{bad:?}");
        }
        if upper_hex != good {
            assert_eq!(ApiKeySecret::parse(&upper_hex), Err(MalformedKey));
        }
    }

    #[test]
    fn debug_shows_the_prefix_only() {
        let key = ApiKeySecret::generate();
        let shown = format!("{key:?}");
        assert!(shown.contains(key.prefix()), "{shown}");
        assert!(!shown.contains(&key.expose()[13..]), "{shown}");
    }

    #[test]
    fn a_prefix_is_named_by_itself_or_by_the_whole_key() {
        let key = ApiKeySecret::generate();
        assert_eq!(prefix_of(key.prefix()).unwrap(), key.prefix());
        assert_eq!(prefix_of(key.expose()).unwrap(), key.prefix());
        assert!(prefix_of("mik_nothex!!").is_err());
        assert!(prefix_of("1a2b3c4d").is_err());
    }
}
