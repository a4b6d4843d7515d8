//! A cache of classifications, keyed by normalised text, catalog version and model.
//!
//! It is bounded by bytes as well as by entries: a key holds the request's whole text (up to
//! `FLEET_MAX_REQUEST_BYTES`, 64 KiB by default) and the input often copies it, so 10,000
//! entries alone could grow to about 1.3 GB. Each entry weighs what it keeps on the heap (key, task name, input, model name) plus
//! a fixed overhead, and at least `bytes / entries`, so both limits hold with one moka weigher.

use std::{mem::size_of, time::Duration};

use clap::Args;
use moka::sync::Cache;
use serde_json::Value;

use super::Decision;
use crate::config::{DEFAULT_CLASSIFY_CACHE_BYTES, DEFAULT_CLASSIFY_CACHE_SIZE};

/// What one entry costs beyond its data: moka's bookkeeping (hash table slot, access-order and
/// expiry links, timestamps) and the `Decision`'s own fields, rounded up.
const ENTRY_OVERHEAD: usize = 256;

/// How much the classification cache may hold; either limit at 0 turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct CacheSize {
    /// Classifications kept in the cache at most (0 turns the cache off).
    #[arg(
        long = "classify-cache-size",
        env = "FLEET_CLASSIFY_CACHE_SIZE",
        default_value_t = DEFAULT_CLASSIFY_CACHE_SIZE
    )]
    pub entries: u64,

    /// Bytes the cache holds at most, keys (the request texts) and decisions counted: a number
    /// of bytes or with a unit (`512KiB`, `16MiB`, `1GiB`; 0 turns the cache off).
    #[arg(
        long = "classify-cache-bytes",
        env = "FLEET_CLASSIFY_CACHE_BYTES",
        default_value = DEFAULT_CLASSIFY_CACHE_BYTES,
        value_parser = parse_bytes
    )]
    pub bytes: u64,
}

// === impl CacheSize ===

impl CacheSize {
    /// Whether the cache is on.
    pub fn is_on(&self) -> bool {
        self.entries > 0 && self.bytes > 0
    }
}

/// Bounded, expiring cache of LLM decisions.
#[derive(Clone)]
pub struct DecisionCache {
    /// The entries, weighed in bytes.
    inner: Cache<String, Decision>,
}

impl std::fmt::Debug for DecisionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionCache")
            .field("entries", &self.inner.entry_count())
            .field("bytes", &self.inner.weighted_size())
            .finish()
    }
}

// === impl DecisionCache ===

impl DecisionCache {
    /// A cache within `size`, each decision kept for `ttl`.
    pub fn new(size: CacheSize, ttl: Duration) -> Self {
        // Every entry weighs at least this much, so at most `entries` of them fit.
        let floor = size.bytes.div_ceil(size.entries.max(1));
        Self {
            inner: Cache::builder()
                .max_capacity(size.bytes)
                .weigher(move |key: &String, decision: &Decision| {
                    let weight = weight(key, decision).max(floor);
                    u32::try_from(weight).unwrap_or(u32::MAX)
                })
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

    /// Keeps a decision (unless it alone weighs more than the whole cache).
    pub fn insert(&self, key: String, decision: Decision) {
        self.inner.insert(key, decision);
    }

    /// The bytes the entries weigh and how many there are, once pending evictions are done.
    pub fn usage(&self) -> (u64, u64) {
        self.inner.run_pending_tasks();
        (self.inner.weighted_size(), self.inner.entry_count())
    }
}

/// The bytes one entry keeps: its data on the heap plus [`ENTRY_OVERHEAD`].
fn weight(key: &str, decision: &Decision) -> u64 {
    let usage = decision.usage.as_ref().map_or(0, |u| u.model.len());
    let bytes =
        ENTRY_OVERHEAD + key.len() + decision.task.len() + json_bytes(&decision.input) + usage;
    u64::try_from(bytes).unwrap_or(u64::MAX)
}

/// Roughly what a JSON value keeps on the heap: its text and a node per value (the value
/// itself, plus a map entry's key for objects).
fn json_bytes(value: &Value) -> usize {
    const NODE: usize = size_of::<Value>() + size_of::<String>();
    NODE + match value {
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(json_bytes).sum(),
        Value::Object(map) => map.iter().map(|(k, v)| k.len() + json_bytes(v)).sum(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

/// Parses a size in bytes: `1048576`, `512KiB`, `16MiB`, `1GiB` (also `KB`, `MB`, `GB` as
/// powers of 1,000, and `B`).
///
/// # Errors
///
/// A message naming the accepted forms.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let text = s.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => 0,
    };
    number
        .parse::<u64>()
        .ok()
        .filter(|_| multiplier > 0)
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("`{s}` is not a size like 1048576, 512KiB or 16MiB"))
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
        let c = DecisionCache::new(
            CacheSize {
                entries: 10,
                bytes: 1 << 20,
            },
            Duration::from_secs(60),
        );
        let d = Decision::new("chat", json!({"prompt": "a"}), ClassifiedBy::Llm);
        c.insert("k".into(), d.clone());
        assert_eq!(c.get("k"), Some(d));
    }

    /// A decision copying `text` into its input, as the LLM's answers do.
    fn copying(text: &str) -> Decision {
        Decision::new(
            "text.transform",
            json!({"text": text, "op": "upper"}),
            ClassifiedBy::Llm,
        )
    }

    #[test]
    fn an_entry_weighs_its_text_twice_and_its_overhead() {
        let text = "x".repeat(64 * 1024);
        let key = DecisionCache::key(&text, 1, "gpt-4o-mini");
        let w = weight(&key, &copying(&text));
        // The key and the input each hold the whole text.
        assert!(w >= 2 * 64 * 1024 + ENTRY_OVERHEAD as u64, "{w}");
        assert!(w < 2 * 64 * 1024 + 1024, "{w}");
        let small = weight("k", &Decision::new("chat", json!({}), ClassifiedBy::Llm));
        assert!((ENTRY_OVERHEAD as u64..1024).contains(&small), "{small}");
        // Nested inputs count every string and key.
        let nested = json!({"a": ["bb", {"ccc": "dddd"}]});
        assert_eq!(
            json_bytes(&nested),
            5 * (size_of::<Value>() + size_of::<String>()) + "a".len() + 2 + 3 + 4
        );
    }

    #[test]
    fn the_cache_holds_at_most_its_bytes() {
        // 64 KiB requests, the worst the default FLEET_MAX_REQUEST_BYTES allows, into 1 MiB.
        let size = CacheSize {
            entries: 10_000,
            bytes: 1 << 20,
        };
        let c = DecisionCache::new(size, Duration::from_secs(60));
        for i in 0..100 {
            let text = format!("{i:05}{}", "y".repeat(64 * 1024));
            c.insert(DecisionCache::key(&text, 1, "m"), copying(&text));
        }
        let (bytes, entries) = c.usage();
        assert!(bytes <= size.bytes, "{bytes} bytes in {entries} entries");
        assert!(
            (4..=8).contains(&entries),
            "1 MiB holds about 7 entries of 2 x 64 KiB: {entries}"
        );
    }

    #[test]
    fn the_cache_holds_at_most_its_entries() {
        let size = CacheSize {
            entries: 10,
            bytes: 16 << 20,
        };
        let c = DecisionCache::new(size, Duration::from_secs(60));
        for i in 0..100 {
            let text = format!("request {i}");
            c.insert(DecisionCache::key(&text, 1, "m"), copying(&text));
        }
        let (bytes, entries) = c.usage();
        assert!(entries <= 10, "{entries} entries");
        assert!(bytes <= size.bytes, "{bytes}");
        assert!(!CacheSize { entries: 0, ..size }.is_on());
        assert!(!CacheSize { bytes: 0, ..size }.is_on());
        assert!(size.is_on());
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("16MiB"), Ok(16 << 20));
        assert_eq!(parse_bytes(" 512 KiB "), Ok(512 << 10));
        assert_eq!(parse_bytes("1gib"), Ok(1 << 30));
        assert_eq!(parse_bytes("2MB"), Ok(2_000_000));
        assert_eq!(parse_bytes("0"), Ok(0));
        for bad in [
            "",
            "MiB",
            "-1",
            "1.5MiB",
            "12 parsecs",
            "99999999999999999999GiB",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
    }
}
