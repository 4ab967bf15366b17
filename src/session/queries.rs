//! The query family: `QUERY_SUB` registers a live query on every shard and answers with the
//! matching entries gathered from all of them (`QUERY_RESP`); `QUERY_UPDATE`s follow from the
//! node's live-query machinery; `QUERY_UNSUB` ends them (PROTOCOL §4.5, §6.8, §6.9).

use std::sync::Arc;

use super::{QuerySubscription, Session};
use crate::limits::MAP_NAME_BYTES_MAX;
use crate::node::wall_ms;
use crate::protocol::{ClientMessage, CursorStatus, QueryResp, ServerMessage};
use crate::query::{self, Query};

fn wire_cursor_status(status: query::CursorStatus) -> CursorStatus {
    match status {
        query::CursorStatus::None => CursorStatus::None,
        query::CursorStatus::Valid => CursorStatus::Valid,
        query::CursorStatus::Expired => CursorStatus::Expired,
        query::CursorStatus::Invalid => CursorStatus::Invalid,
    }
}

fn encode_value(value: &rmpv::Value) -> crate::model::ValueBytes {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).expect("writing to a Vec cannot fail");
    crate::model::ValueBytes::from(out)
}

impl Session {
    pub(super) async fn on_query(&mut self, message: ClientMessage) {
        match message {
            ClientMessage::QuerySub { query_id, map_name, query, fields } => {
                self.on_query_sub(query_id, map_name, query, fields).await
            }
            ClientMessage::QueryUnsub { query_id } => match self.queries.remove(&query_id) {
                Some(subscription) => self.node.unsubscribe_live(vec![subscription.local]).await,
                None => self.send_error(404, format!("unknown query subscription: {query_id}")),
            },
            _ => unreachable!("registry routes only QUERY_SUB and QUERY_UNSUB here"),
        }
    }

    async fn on_query_sub(
        &mut self,
        query_id: String,
        map_name: String,
        query: rmpv::Value,
        fields: Option<Vec<String>>,
    ) {
        if map_name.is_empty() || map_name.len() > MAP_NAME_BYTES_MAX {
            return self.send_error(
                400,
                format!("malformed message: QUERY_SUB.payload.mapName must be 1 to {MAP_NAME_BYTES_MAX} bytes"),
            );
        }
        let query = match Query::from_value(&query) {
            Ok(query) => Arc::new(query),
            Err(error) => return self.send_error(400, format!("invalid query: {error}")),
        };
        // Re-using a queryId replaces the subscription (the client re-sends every QUERY_SUB
        // after a reconnect), so only new ids count toward the bound.
        if !self.queries.contains_key(&query_id) && self.at_subscription_limit() {
            let max = self.node.config.max_subscriptions_per_connection;
            return self.send_error(429, format!("too many subscriptions on this connection (max {max})"));
        }
        // Re-using a queryId replaces the subscription (PROTOCOL §4.5).
        if let Some(previous) = self.queries.remove(&query_id) {
            self.node.unsubscribe_live(vec![previous.local]).await;
        }
        let map: Arc<str> = Arc::from(map_name.as_str());
        self.add_interest(&map).await;
        let now = wall_ms();
        let (page, seqs, local) =
            self.node.subscribe_live(self.conn, query_id.clone(), map, Arc::clone(&query), fields.clone(), now).await;
        let results = page
            .rows
            .iter()
            .map(|(key, value)| {
                let value = match &fields {
                    Some(fields) => encode_value(&query::project(value, fields)),
                    None => encode_value(value),
                };
                (key.clone(), value)
            })
            .collect();
        self.queries.insert(query_id.clone(), QuerySubscription { local });
        self.send(&ServerMessage::QueryResp(QueryResp {
            query_id,
            results,
            next_cursor: page.next_cursor.clone(),
            has_more: Some(page.has_more),
            cursor_status: Some(wire_cursor_status(page.cursor_status)),
            merkle_root_hash: None,
            error: None,
            code: None,
        }));
        // Updates that raced the snapshot go out after QUERY_RESP.
        self.node.start_live(local, &page, &seqs);
    }
}
