//! The search family: `SEARCH` (one-shot), `SEARCH_SUB` / `SEARCH_UNSUB` (live) over the
//! node's full-text indexes (PROTOCOL §4.9, §6.13, DECISIONS §6). Results carry the record's
//! value (DECISIONS §3.4).

use std::sync::Arc;

use super::Session;
use crate::limits::MAP_NAME_BYTES_MAX;
use crate::protocol::{ClientMessage, SearchHit, SearchOptions, ServerMessage};
use crate::search::{query_terms, Hit, SEARCH_RESULTS_DEFAULT, SEARCH_RESULTS_MAX};

fn wire_hits(hits: &[Hit]) -> Vec<SearchHit> {
    hits.iter()
        .map(|hit| SearchHit {
            key: hit.key.clone(),
            value: Some(hit.value.clone()),
            score: hit.score,
            matched_terms: hit.matched_terms.clone(),
        })
        .collect()
}

/// (limit, minScore) from the options, bounded.
fn limits_of(options: &SearchOptions) -> Result<(usize, f64), String> {
    let limit = options.limit.map_or(SEARCH_RESULTS_DEFAULT, |limit| (limit as usize).min(SEARCH_RESULTS_MAX));
    let min_score = options.min_score.unwrap_or(0.0);
    if !min_score.is_finite() {
        return Err("options.minScore must be a finite number".into());
    }
    Ok((limit, min_score))
}

impl Session {
    pub(super) async fn on_search(&mut self, message: ClientMessage) {
        match message {
            ClientMessage::Search { request_id, map_name, query, options } => {
                let (limit, min_score) = match self.check_search(&map_name, &options) {
                    Ok(bounds) => bounds,
                    Err(error) => return self.send_search_error(request_id, error),
                };
                let hits = self.node.search(Arc::from(map_name.as_str()), query_terms(&query), limit, min_score).await;
                self.send(&ServerMessage::SearchResp {
                    request_id,
                    total_count: hits.len() as u64,
                    results: wire_hits(&hits),
                    error: None,
                });
            }
            ClientMessage::SearchSub { subscription_id, map_name, query, options } => {
                let (limit, min_score) = match self.check_search(&map_name, &options) {
                    Ok(bounds) => bounds,
                    Err(error) => return self.send_search_error(subscription_id, error),
                };
                if !self.searches.contains_key(&subscription_id) && self.at_subscription_limit() {
                    let max = self.node.config.max_subscriptions_per_connection;
                    return self.send_search_error(
                        subscription_id,
                        format!("too many subscriptions on this connection (max {max})"),
                    );
                }
                if let Some(previous) = self.searches.remove(&subscription_id) {
                    self.node.unsubscribe_search(vec![previous]).await;
                }
                let map = Arc::from(map_name.as_str());
                let (hits, seqs, local) = self
                    .node
                    .subscribe_search(self.conn, subscription_id.clone(), map, query_terms(&query), limit, min_score)
                    .await;
                self.searches.insert(subscription_id.clone(), local);
                // PROTOCOL §4.9: the snapshot is a SEARCH_RESP whose requestId is the subscription id.
                self.send(&ServerMessage::SearchResp {
                    request_id: subscription_id,
                    total_count: hits.len() as u64,
                    results: wire_hits(&hits),
                    error: None,
                });
                self.node.start_search(local, &hits, &seqs);
            }
            ClientMessage::SearchUnsub { subscription_id } => match self.searches.remove(&subscription_id) {
                Some(local) => self.node.unsubscribe_search(vec![local]).await,
                None => self.send_error(404, format!("unknown search subscription: {subscription_id}")),
            },
            _ => unreachable!("registry routes only SEARCH, SEARCH_SUB and SEARCH_UNSUB here"),
        }
    }

    fn check_search(&self, map_name: &str, options: &SearchOptions) -> Result<(usize, f64), String> {
        if map_name.is_empty() || map_name.len() > MAP_NAME_BYTES_MAX {
            return Err(format!("mapName must be 1 to {MAP_NAME_BYTES_MAX} bytes"));
        }
        limits_of(options)
    }

    /// A refused search still answers its requestId, so the client does not wait on it.
    fn send_search_error(&mut self, request_id: String, error: String) {
        self.send(&ServerMessage::SearchResp { request_id, results: Vec::new(), total_count: 0, error: Some(error) });
    }
}
