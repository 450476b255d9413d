//! The verified-token cache: a token seen again skips signature verification until it expires.
//!
//! Keyed by the SHA-256 of the token (the token itself is never stored), bounded
//! (`pingora-memory-cache`, TinyUFO eviction), and every entry expires with its token (`exp`
//! plus the leeway) or after `max_ttl`, whichever is first. The cache hashes keys to 64 bits
//! internally, so each entry keeps the full digest and a hit is only a hit when it matches.

use std::sync::Arc;
use std::time::Duration;

use pingora_memory_cache::MemoryCache;
use sha2::{Digest, Sha256};

use crate::user::User;

/// A verified token's outcome.
#[derive(Debug)]
pub struct CachedToken {
    digest: [u8; 32],
    /// The user the token maps to.
    pub user: Arc<User>,
    /// The `kid` of the key that verified it (a hit is refused once that key is gone).
    pub kid: Option<String>,
    /// Unix seconds after which the entry is dead.
    pub expires_at: u64,
}

/// Bounded cache of verified tokens.
pub struct TokenCache {
    cache: MemoryCache<[u8; 32], Arc<CachedToken>>,
    max_ttl: Duration,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("max_ttl", &self.max_ttl)
            .finish()
    }
}

impl TokenCache {
    /// A cache of about `capacity` tokens; no entry lives longer than `max_ttl`.
    pub fn new(capacity: usize, max_ttl: Duration) -> TokenCache {
        TokenCache {
            cache: MemoryCache::new(capacity.max(16)),
            max_ttl,
        }
    }

    /// The cache key of a token.
    pub fn digest(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    /// A live entry for this digest.
    pub fn get(&self, digest: &[u8; 32], now: u64) -> Option<Arc<CachedToken>> {
        let (hit, _) = self.cache.get(digest);
        hit.filter(|e| e.digest == *digest && now < e.expires_at)
    }

    /// Remember a verified token until `valid_until` (Unix seconds, exclusive) or `max_ttl`.
    pub fn put(
        &self,
        digest: [u8; 32],
        user: Arc<User>,
        kid: Option<String>,
        valid_until: u64,
        now: u64,
    ) {
        let expires_at = valid_until.min(now.saturating_add(self.max_ttl.as_secs()));
        if expires_at <= now {
            return;
        }
        let ttl = Duration::from_secs(expires_at - now);
        self.cache.put(
            &digest,
            Arc::new(CachedToken {
                digest,
                user,
                kid,
                expires_at,
            }),
            Some(ttl),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::unix_now;

    fn user(id: &str) -> Arc<User> {
        Arc::new(User {
            identity: id.into(),
            display_name: id.into(),
            ..User::default()
        })
    }

    #[test]
    fn hit_until_expiry_and_only_for_the_same_digest() {
        let c = TokenCache::new(100, Duration::from_secs(3600));
        let now = unix_now();
        let d = TokenCache::digest("a.b.c");
        c.put(d, user("alice"), Some("k1".into()), now + 10, now);
        assert_eq!(c.get(&d, now).unwrap().user.identity, "alice");
        assert_eq!(c.get(&d, now).unwrap().kid.as_deref(), Some("k1"));
        assert!(c.get(&d, now + 10).is_none(), "dead at expiry");
        assert!(c.get(&TokenCache::digest("a.b.d"), now).is_none());
    }

    #[test]
    fn expired_or_capped_entries() {
        let c = TokenCache::new(100, Duration::from_secs(5));
        let now = unix_now();
        let d = TokenCache::digest("x");
        c.put(d, user("a"), None, now, now);
        assert!(c.get(&d, now).is_none(), "already expired is not stored");
        c.put(d, user("a"), None, now + 1000, now);
        assert_eq!(
            c.get(&d, now).unwrap().expires_at,
            now + 5,
            "capped by max_ttl"
        );
    }
}
