//! shardgrid::search: full-text search, without IO (DECISIONS §6, PROTOCOL §6.13).
//!
//! A map becomes searchable the first time a client searches it: from then on every owner
//! shard keeps a BM25 inverted index of the string values of its records (`index`). A search
//! runs in two rounds over the mesh: every shard reports its share of the statistics of the
//! query's terms (documents, total length, document frequencies); the connection's shard adds
//! them into the map's global statistics; every shard then scores its own documents with those
//! global numbers and returns its best; the connection's shard merges by score (ties by key).
//! So results and scores do not depend on the shard count. Live searches (`subscriptions`,
//! `coordinator`) re-score each written document with the statistics taken when the
//! subscription started.

pub mod coordinator;
pub mod index;
pub mod subscriptions;

/// Tokens longer than this many bytes are dropped (DECISIONS §6.3).
pub const TOKEN_BYTES_MAX: usize = 40;
/// Terms of one search query that are used; the rest are ignored.
pub const QUERY_TERMS_MAX: usize = 32;
/// Results one search returns at most, whatever `limit` asks for.
pub const SEARCH_RESULTS_MAX: usize = 1_000;
/// Results when `options.limit` is absent (PROTOCOL §4.9).
pub const SEARCH_RESULTS_DEFAULT: usize = 10;
/// BM25 parameters (PROTOCOL §6.13).
pub const BM25_K1: f64 = 1.2;
pub const BM25_B: f64 = 0.75;

/// Splits text into lowercase tokens of Unicode letters and digits, dropping tokens over
/// `TOKEN_BYTES_MAX` bytes; no stemming or stop words, so results are predictable.
pub fn tokenize(text: &str, tokens: &mut Vec<String>) {
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|word| !word.is_empty()) {
        let token = word.to_lowercase();
        if token.len() <= TOKEN_BYTES_MAX {
            tokens.push(token);
        }
    }
}

/// The distinct terms of a search query, in first-seen order, at most `QUERY_TERMS_MAX`.
pub fn query_terms(query: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    tokenize(query, &mut tokens);
    let mut terms: Vec<String> = Vec::new();
    for token in tokens {
        if !terms.contains(&token) && terms.len() < QUERY_TERMS_MAX {
            terms.push(token);
        }
    }
    terms
}

/// Appends the tokens of every string inside a record value (maps and arrays walked; keys are
/// not text). The walk uses an explicit stack: values were depth-checked on the way in, but the
/// index should not depend on that.
pub fn document_tokens(value: &rmpv::Value, tokens: &mut Vec<String>) {
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            rmpv::Value::String(text) => {
                if let Some(text) = text.as_str() {
                    tokenize(text, tokens);
                }
            }
            rmpv::Value::Array(items) => stack.extend(items.iter().rev()),
            rmpv::Value::Map(entries) => stack.extend(entries.iter().rev().map(|(_, value)| value)),
            _ => {}
        }
    }
}

/// One shard's share of a map's statistics for some query terms. They add up across shards.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TermStats {
    pub documents: u64,
    pub total_length: u64,
    /// Documents containing each query term, in the query's term order.
    pub document_frequencies: Vec<u64>,
}

impl TermStats {
    pub fn add(&mut self, other: &TermStats) {
        self.documents += other.documents;
        self.total_length += other.total_length;
        if self.document_frequencies.len() < other.document_frequencies.len() {
            self.document_frequencies.resize(other.document_frequencies.len(), 0);
        }
        for (mine, theirs) in self.document_frequencies.iter_mut().zip(&other.document_frequencies) {
            *mine += theirs;
        }
    }

    /// BM25 of one document with these (global) statistics: `frequencies[i]` is how often query
    /// term `i` occurs in it, `length` its token count.
    pub fn score(&self, frequencies: &[u32], length: u32) -> f64 {
        if self.documents == 0 {
            return 0.0;
        }
        let documents = self.documents as f64;
        let average_length = (self.total_length as f64 / documents).max(1.0);
        let mut score = 0.0;
        for (frequency, document_frequency) in frequencies.iter().zip(&self.document_frequencies) {
            if *frequency == 0 {
                continue;
            }
            let document_frequency = *document_frequency as f64;
            let idf = (1.0 + (documents - document_frequency + 0.5) / (document_frequency + 0.5)).ln();
            let frequency = *frequency as f64;
            let norm = BM25_K1 * (1.0 - BM25_B + BM25_B * length as f64 / average_length);
            score += idf * frequency * (BM25_K1 + 1.0) / (frequency + norm);
        }
        score
    }
}

/// One scored document.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub key: String,
    pub score: f64,
    pub matched_terms: Vec<String>,
    pub value: crate::model::ValueBytes,
}

/// Orders hits best first: score descending, then key ascending.
pub fn rank(hits: &mut [Hit]) {
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.key.cmp(&b.key)));
}

#[cfg(test)]
mod tests {
    use super::*;

    // Tokens are lowercase Unicode words; long tokens are dropped; query terms are distinct.
    #[test]
    fn tokenizes_unicode_words() {
        let mut tokens = Vec::new();
        tokenize("Hello, Wörld! 42x ünïcode-ok", &mut tokens);
        assert_eq!(tokens, vec!["hello", "wörld", "42x", "ünïcode", "ok"]);
        tokens.clear();
        tokenize(&"a".repeat(41), &mut tokens);
        assert!(tokens.is_empty());
        assert_eq!(query_terms("Milk milk BREAD"), vec!["milk", "bread"]);
    }

    // The BM25 formula of PROTOCOL §6.13 on a hand-computed case.
    #[test]
    fn bm25_matches_the_formula() {
        let stats = TermStats { documents: 10, total_length: 100, document_frequencies: vec![2] };
        let idf = (1.0f64 + (10.0 - 2.0 + 0.5) / (2.0 + 0.5)).ln();
        let expected = idf * 3.0 * 2.2 / (3.0 + 1.2 * (1.0 - 0.75 + 0.75 * 5.0 / 10.0));
        assert!((stats.score(&[3], 5) - expected).abs() < 1e-12);
        assert_eq!(stats.score(&[0], 5), 0.0);
    }

    // Strings inside nested maps and arrays are text; keys and numbers are not.
    #[test]
    fn collects_nested_strings() {
        let value = rmpv::Value::Map(vec![
            (rmpv::Value::from("title"), rmpv::Value::from("Buy milk")),
            (rmpv::Value::from("tags"), rmpv::Value::Array(vec![rmpv::Value::from("Food"), rmpv::Value::from(3)])),
        ]);
        let mut tokens = Vec::new();
        document_tokens(&value, &mut tokens);
        assert_eq!(tokens, vec!["buy", "milk", "food"]);
    }
}
