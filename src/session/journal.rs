//! The journal family: `JOURNAL_SUBSCRIBE` (live events only, no reply), `JOURNAL_UNSUBSCRIBE`
//! (no reply), `JOURNAL_READ` -> `JOURNAL_READ_RESPONSE` (PROTOCOL §4.11). The order of events
//! and what `fromSequence` means across shards is `coord::journal`'s module doc.

use std::sync::Arc;

use super::Session;
use crate::coord::journal::JournalFilter;
use crate::limits::{JOURNAL_READ_LIMIT_DEFAULT, JOURNAL_READ_LIMIT_MAX, JOURNAL_SUBSCRIPTIONS_PER_CONNECTION_MAX};
use crate::protocol::{ClientMessage, ServerMessage};

impl Session {
    pub(super) async fn on_journal(&mut self, message: ClientMessage) {
        match message {
            // `fromSequence` is ignored: a subscription gets live events only (PROTOCOL §4.11).
            ClientMessage::JournalSubscribe { request_id, from_sequence: _, map_name, types } => {
                if !self.coord.journal.contains(&request_id)
                    && self.coord.journal.len() >= JOURNAL_SUBSCRIPTIONS_PER_CONNECTION_MAX
                {
                    let max = JOURNAL_SUBSCRIPTIONS_PER_CONNECTION_MAX;
                    return self
                        .send_error(429, format!("too many journal subscriptions on this connection (max {max})"));
                }
                self.coord.journal.insert(request_id.clone());
                let filter = JournalFilter { map: map_name, types };
                self.node.journal_subscribe(self.conn, request_id, filter).await;
            }
            ClientMessage::JournalUnsubscribe { subscription_id } => {
                if self.coord.journal.remove(&subscription_id) {
                    self.node.journal_unsubscribe(self.conn, vec![subscription_id]).await;
                }
            }
            ClientMessage::JournalRead { request_id, from_sequence, limit, map_name } => {
                let limit =
                    limit.map_or(JOURNAL_READ_LIMIT_DEFAULT, |limit| limit.min(JOURNAL_READ_LIMIT_MAX as u64) as usize);
                let map = map_name.map(|map| Arc::from(map.as_str()));
                let (events, has_more) = self.node.journal_read(from_sequence, limit, map).await;
                self.send(&ServerMessage::JournalReadResponse { request_id, events, has_more });
            }
            _ => unreachable!("registry routes only JOURNAL_* requests here"),
        }
    }
}
