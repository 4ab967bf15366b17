//! Live searches registered on an owner shard: for each written document of a searched map,
//! the subscriptions whose terms occur in its old or new text are re-scored (with the global
//! statistics taken when each subscription started) and told `Upsert` or `Gone`. Lives on
//! every shard.

use std::sync::Arc;

use ahash::AHashMap;

use super::index::frequencies_of;
use super::TermStats;
use crate::live::SubKey;
use crate::model::ValueBytes;

/// What an owner tells a live search's shard about one written document.
#[derive(Clone, Debug, PartialEq)]
pub enum SearchChange {
    Upsert { key: String, value: ValueBytes, score: f64, matched_terms: Vec<String> },
    Gone { key: String },
}

/// A live search as its owners evaluate it.
pub struct SearchSpec {
    pub terms: Vec<String>,
    pub stats: TermStats,
    pub min_score: f64,
}

#[derive(Default)]
struct MapSearches {
    specs: AHashMap<SubKey, Arc<SearchSpec>>,
    /// term -> subscriptions whose query contains it.
    by_term: AHashMap<String, Vec<SubKey>>,
}

/// See the module doc.
#[derive(Default)]
pub struct SearchSubscriptions {
    maps: AHashMap<Arc<str>, MapSearches>,
    map_of: AHashMap<SubKey, Arc<str>>,
}

impl SearchSubscriptions {
    pub fn has_map(&self, map: &str) -> bool {
        self.maps.contains_key(map)
    }

    pub fn len(&self) -> usize {
        self.map_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map_of.is_empty()
    }

    pub fn register(&mut self, sub: SubKey, map: Arc<str>, spec: Arc<SearchSpec>) {
        self.unregister(sub);
        let searches = self.maps.entry(Arc::clone(&map)).or_default();
        for term in &spec.terms {
            searches.by_term.entry(term.clone()).or_default().push(sub);
        }
        searches.specs.insert(sub, spec);
        self.map_of.insert(sub, map);
    }

    pub fn unregister(&mut self, sub: SubKey) {
        let Some(map) = self.map_of.remove(&sub) else { return };
        let searches = self.maps.get_mut(&map).expect("a registered map has its entry");
        if let Some(spec) = searches.specs.remove(&sub) {
            for term in &spec.terms {
                if let Some(subs) = searches.by_term.get_mut(term) {
                    subs.retain(|filed| *filed != sub);
                    if subs.is_empty() {
                        searches.by_term.remove(term);
                    }
                }
            }
        }
        if searches.specs.is_empty() {
            self.maps.remove(&map);
        }
    }

    /// Re-scores one written document for the live searches it concerns.
    pub fn evaluate(
        &self,
        map: &str,
        key: &str,
        before: Option<&rmpv::Value>,
        after: Option<(&rmpv::Value, &ValueBytes)>,
        changes: &mut Vec<(SubKey, SearchChange)>,
    ) {
        let Some(searches) = self.maps.get(map) else { return };
        let before = before.map(frequencies_of);
        let after_frequencies = after.map(|(value, _)| frequencies_of(value));
        let mut candidates: Vec<SubKey> = Vec::new();
        for (frequencies, _) in before.iter().chain(after_frequencies.iter()) {
            for term in frequencies.keys() {
                if let Some(subs) = searches.by_term.get(term) {
                    candidates.extend_from_slice(subs);
                }
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        for sub in candidates {
            let spec = &searches.specs[&sub];
            let score_of = |(frequencies, length): &(AHashMap<String, u32>, u32)| {
                super::index::SearchIndex::score_document(&spec.stats, &spec.terms, frequencies, *length)
            };
            let was = before.as_ref().map(score_of).is_some_and(|(score, _)| score > 0.0 && score >= spec.min_score);
            let now =
                after_frequencies.as_ref().map(score_of).filter(|(score, _)| *score > 0.0 && *score >= spec.min_score);
            match (now, after) {
                (Some((score, matched_terms)), Some((_, bytes))) => changes.push((
                    sub,
                    SearchChange::Upsert { key: key.to_string(), value: bytes.clone(), score, matched_terms },
                )),
                _ if was => changes.push((sub, SearchChange::Gone { key: key.to_string() })),
                _ => {}
            }
        }
    }
}
