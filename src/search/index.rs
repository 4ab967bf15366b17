//! The inverted index of one map on one owner shard: per document (key) its token count and
//! term frequencies, per term the documents containing it. Kept current by `ShardData` on
//! every write to a map that has been searched. Lives on the partition's owner shard.

use ahash::AHashMap;

use super::{document_tokens, Hit, TermStats};
use crate::model::ValueBytes;

struct Document {
    length: u32,
    frequencies: AHashMap<String, u32>,
    value: ValueBytes,
}

/// See the module doc.
#[derive(Default)]
pub struct SearchIndex {
    documents: AHashMap<String, Document>,
    postings: AHashMap<String, AHashMap<String, u32>>,
    total_length: u64,
}

impl SearchIndex {
    pub fn document_count(&self) -> usize {
        self.documents.len()
    }

    /// Replaces the document of `key` with `value` (`None`: removed, a tombstone or expired).
    pub fn update(&mut self, key: &str, value: Option<(&rmpv::Value, &ValueBytes)>) {
        if let Some(old) = self.documents.remove(key) {
            self.total_length -= old.length as u64;
            for term in old.frequencies.keys() {
                if let Some(documents) = self.postings.get_mut(term) {
                    documents.remove(key);
                    if documents.is_empty() {
                        self.postings.remove(term);
                    }
                }
            }
        }
        let Some((value, bytes)) = value else { return };
        let mut tokens = Vec::new();
        document_tokens(value, &mut tokens);
        if tokens.is_empty() {
            return;
        }
        let mut frequencies: AHashMap<String, u32> = AHashMap::new();
        for token in &tokens {
            *frequencies.entry(token.clone()).or_default() += 1;
        }
        for (term, frequency) in &frequencies {
            self.postings.entry(term.clone()).or_default().insert(key.to_string(), *frequency);
        }
        let length = tokens.len() as u32;
        self.total_length += length as u64;
        self.documents.insert(key.to_string(), Document { length, frequencies, value: bytes.clone() });
    }

    /// This shard's share of the statistics for `terms`.
    pub fn stats(&self, terms: &[String]) -> TermStats {
        TermStats {
            documents: self.documents.len() as u64,
            total_length: self.total_length,
            document_frequencies: terms
                .iter()
                .map(|term| self.postings.get(term).map_or(0, |docs| docs.len() as u64))
                .collect(),
        }
    }

    /// Scores one document (already tokenized into `frequencies`) for `terms`.
    pub fn score_document(
        stats: &TermStats,
        terms: &[String],
        frequencies: &AHashMap<String, u32>,
        length: u32,
    ) -> (f64, Vec<String>) {
        let counts: Vec<u32> = terms.iter().map(|term| frequencies.get(term).copied().unwrap_or(0)).collect();
        let matched =
            terms.iter().zip(&counts).filter(|(_, count)| **count > 0).map(|(term, _)| term.clone()).collect();
        (stats.score(&counts, length), matched)
    }

    /// This shard's best `limit` documents for `terms` scored with the global `stats`, with a
    /// score above zero and at least `min_score`, best first.
    pub fn top(&self, terms: &[String], stats: &TermStats, limit: usize, min_score: f64) -> Vec<Hit> {
        let mut candidates: Vec<&str> = Vec::new();
        for term in terms {
            if let Some(documents) = self.postings.get(term) {
                candidates.extend(documents.keys().map(String::as_str));
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        let mut hits: Vec<Hit> = candidates
            .into_iter()
            .filter_map(|key| {
                let document = &self.documents[key];
                let (score, matched_terms) = Self::score_document(stats, terms, &document.frequencies, document.length);
                (score > 0.0 && score >= min_score).then(|| Hit {
                    key: key.to_string(),
                    score,
                    matched_terms,
                    value: document.value.clone(),
                })
            })
            .collect();
        super::rank(&mut hits);
        hits.truncate(limit);
        hits
    }
}

/// Tokenizes a value into (frequencies, length) for scoring outside an index.
pub fn frequencies_of(value: &rmpv::Value) -> (AHashMap<String, u32>, u32) {
    let mut tokens = Vec::new();
    document_tokens(value, &mut tokens);
    let mut frequencies: AHashMap<String, u32> = AHashMap::new();
    for token in &tokens {
        *frequencies.entry(token.clone()).or_default() += 1;
    }
    (frequencies, tokens.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(words: &str) -> (rmpv::Value, ValueBytes) {
        let value = rmpv::Value::Map(vec![(rmpv::Value::from("t"), rmpv::Value::from(words))]);
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &value).unwrap();
        (value, ValueBytes::from(out))
    }

    // Goal: one index and the same documents split over three indexes give identical hits when
    // scored with the summed statistics (the property that makes results shard-independent).
    #[test]
    fn split_indexes_score_like_one() {
        let documents =
            ["milk and bread", "milk milk milk", "bread only", "nothing here", "Milk shake with bread and milk"];
        let mut one = SearchIndex::default();
        let mut three: Vec<SearchIndex> = (0..3).map(|_| SearchIndex::default()).collect();
        for (number, words) in documents.iter().enumerate() {
            let (value, bytes) = text(words);
            one.update(&format!("d{number}"), Some((&value, &bytes)));
            three[number % 3].update(&format!("d{number}"), Some((&value, &bytes)));
        }
        let terms = vec!["milk".to_string(), "bread".to_string()];
        let global = one.stats(&terms);
        let mut summed = TermStats::default();
        three.iter().for_each(|index| summed.add(&index.stats(&terms)));
        assert_eq!(global, summed);
        let expected = one.top(&terms, &global, 10, 0.0);
        let mut merged: Vec<Hit> = three.iter().flat_map(|index| index.top(&terms, &summed, 10, 0.0)).collect();
        crate::search::rank(&mut merged);
        assert_eq!(merged, expected);
        assert_eq!(expected.len(), 4);
    }

    // Removing or replacing a document updates the statistics exactly.
    #[test]
    fn updates_are_exact() {
        let mut index = SearchIndex::default();
        let (value, bytes) = text("a b c");
        index.update("k", Some((&value, &bytes)));
        let (value, bytes) = text("a");
        index.update("k", Some((&value, &bytes)));
        let terms = vec!["a".to_string(), "b".to_string()];
        assert_eq!(index.stats(&terms), TermStats { documents: 1, total_length: 1, document_frequencies: vec![1, 0] });
        index.update("k", None);
        assert_eq!(index.stats(&terms), TermStats { documents: 0, total_length: 0, document_frequencies: vec![0, 0] });
    }
}
