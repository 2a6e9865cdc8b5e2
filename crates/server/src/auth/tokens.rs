//! Auth tokens: etcd's `simple` tokens.
//!
//! A simple token is `<16 random letters>.<log index>`: the proposer picks
//! the letters, and the `Authenticate` entry, applied at that index on every
//! member, gives the token to the user there. So any member accepts it once
//! it has applied that index (a member behind waits for it), and each member
//! keeps the token alive for `--auth-token-ttl` after its last use (etcd's
//! default: 300 s). Tokens live in memory only, as etcd's: a restarted
//! member knows those its log replay applies again.
//!
//! A user's tokens are forgotten when the user is deleted or changes
//! password, and every token when auth is disabled.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng as _;

/// Letters of a token prefix, as etcd draws them.
const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
/// Length of a token prefix.
const PREFIX_LEN: usize = 16;
/// How often, at most, expired tokens are swept out on assignment.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A fresh random token prefix.
pub fn new_prefix() -> String {
    let mut rng = rand::thread_rng();
    (0..PREFIX_LEN)
        .map(|_| LETTERS[rng.gen_range(0..LETTERS.len())] as char)
        .collect()
}

/// The log index a simple token names, if it has a simple token's shape.
pub fn simple_token_index(token: &str) -> Option<u64> {
    let (prefix, index) = token.split_once('.')?;
    if prefix.is_empty() || index.contains('.') {
        return None;
    }
    index.parse().ok()
}

struct Entry {
    user: String,
    expires: Instant,
}

struct Tokens {
    by_token: HashMap<String, Entry>,
    last_sweep: Instant,
}

/// This member's simple tokens.
pub struct TokenStore {
    ttl: Duration,
    tokens: Mutex<Tokens>,
}

impl TokenStore {
    /// Tokens that live `ttl` after their last use.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            tokens: Mutex::new(Tokens {
                by_token: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tokens> {
        // The map holds no invariant a panicking holder could break.
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives `token` to `user` (an applied `Authenticate`).
    pub fn assign(&self, token: String, user: String) {
        let now = Instant::now();
        let mut tokens = self.lock();
        if now.duration_since(tokens.last_sweep) >= SWEEP_INTERVAL {
            tokens.by_token.retain(|_, e| e.expires > now);
            tokens.last_sweep = now;
        }
        tokens.by_token.insert(
            token,
            Entry {
                user,
                expires: now + self.ttl,
            },
        );
    }

    /// The user `token` belongs to, if it is known and alive; a use keeps
    /// it alive for another TTL.
    pub fn user(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let mut tokens = self.lock();
        let entry = tokens.by_token.get_mut(token)?;
        if entry.expires <= now {
            tokens.by_token.remove(token);
            return None;
        }
        entry.expires = now + self.ttl;
        Some(entry.user.clone())
    }

    /// Forgets `user`'s tokens.
    pub fn invalidate_user(&self, user: &str) {
        self.lock().by_token.retain(|_, e| e.user != user);
    }

    /// Forgets every token.
    pub fn clear(&self) {
        self.lock().by_token.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_index_and_prefixes_are_letters() {
        let prefix = new_prefix();
        assert_eq!(prefix.len(), PREFIX_LEN);
        assert!(prefix.bytes().all(|b| b.is_ascii_alphabetic()));
        assert_eq!(simple_token_index(&format!("{prefix}.42")), Some(42));
        assert_eq!(simple_token_index("bogus"), None);
        assert_eq!(simple_token_index("a.b"), None);
        assert_eq!(simple_token_index(".1"), None);
        assert_eq!(simple_token_index("a.1.2"), None);
    }

    #[test]
    fn tokens_expire_unless_used_and_are_forgotten_with_their_user() {
        let store = TokenStore::new(Duration::from_millis(200));
        store.assign("a.1".into(), "alice".into());
        store.assign("b.2".into(), "bob".into());
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(store.user("a.1").as_deref(), Some("alice"), "kept by use");
        }
        assert_eq!(store.user("b.2"), None, "expired unused");
        store.invalidate_user("alice");
        assert_eq!(store.user("a.1"), None);
        store.assign("c.3".into(), "carol".into());
        store.clear();
        assert_eq!(store.user("c.3"), None);
    }
}
