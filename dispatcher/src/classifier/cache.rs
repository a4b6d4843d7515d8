//! A cache of classifications, keyed by normalised text, catalog version and model.

use std::time::Duration;

use moka::sync::Cache;

use super::Decision;

/// Bounded, expiring cache of LLM decisions.
#[derive(Clone)]
pub struct DecisionCache {
    /// The entries.
    inner: Cache<String, Decision>,
}

impl std::fmt::Debug for DecisionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionCache")
            .field("entries", &self.inner.entry_count())
            .finish()
    }
}

// === impl DecisionCache ===

impl DecisionCache {
    /// A cache of at most `size` decisions, each kept for `ttl`; `size` 0 disables it.
    pub fn new(size: u64, ttl: Duration) -> Self {
        Self {
            inner: Cache::builder()
                .max_capacity(size)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// The key of `text` for a catalog version and model: runs of white space do not matter,
    /// case does (the input copies the request's words).
    pub fn key(text: &str, catalog_version: u64, model: &str) -> String {
        let normal: Vec<&str> = text.split_whitespace().collect();
        format!("{catalog_version}\u{1f}{model}\u{1f}{}", normal.join(" "))
    }

    /// A cached decision.
    pub fn get(&self, key: &str) -> Option<Decision> {
        self.inner.get(key)
    }

    /// Keeps a decision.
    pub fn insert(&self, key: String, decision: Decision) {
        self.inner.insert(key, decision);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_common::messages::ClassifiedBy;
    use serde_json::json;

    #[test]
    fn keys_ignore_spacing_but_not_case_or_the_catalog() {
        assert_eq!(
            DecisionCache::key("Make  X upper", 1, "m"),
            DecisionCache::key(" Make X upper ", 1, "m")
        );
        assert_ne!(
            DecisionCache::key("Make x upper", 1, "m"),
            DecisionCache::key("Make X upper", 1, "m")
        );
        assert_ne!(
            DecisionCache::key("a", 1, "m"),
            DecisionCache::key("a", 2, "m")
        );
        let c = DecisionCache::new(10, Duration::from_secs(60));
        let d = Decision::new("chat", json!({"prompt": "a"}), ClassifiedBy::Llm);
        c.insert("k".into(), d.clone());
        assert_eq!(c.get("k"), Some(d));
    }
}
