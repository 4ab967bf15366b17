//! The counter family: `COUNTER_REQUEST` -> `COUNTER_RESPONSE`, `COUNTER_SYNC` ->
//! `COUNTER_UPDATE` (PROTOCOL §4.8). Both subscribe the connection to the counter's updates
//! until it closes. States arrive in either key spelling and leave in both (the codec's
//! concern, DECISIONS §1.5); totals that are not finite non-negative numbers are refused by the
//! decoder as malformed (`ERROR 400`) before anything is merged.

use std::sync::Arc;

use super::Session;
use crate::limits::{COUNTERS_PER_CONNECTION_MAX, COUNTER_NAME_BYTES_MAX};
use crate::protocol::{ClientMessage, ServerMessage};

impl Session {
    pub(super) async fn on_counter(&mut self, message: ClientMessage) {
        let name = match &message {
            ClientMessage::CounterRequest { name } | ClientMessage::CounterSync { name, .. } => name.as_str(),
            _ => unreachable!("registry routes only COUNTER_REQUEST and COUNTER_SYNC here"),
        };
        if name.is_empty() || name.len() > COUNTER_NAME_BYTES_MAX {
            return self.send_error(400, format!("invalid counter name: 1 to {COUNTER_NAME_BYTES_MAX} bytes"));
        }
        if !self.coord.counters.contains(name) {
            if self.coord.counters.len() >= COUNTERS_PER_CONNECTION_MAX {
                return self.send_error(
                    429,
                    format!("too many counters on this connection (max {COUNTERS_PER_CONNECTION_MAX})"),
                );
            }
            self.coord.counters.insert(Arc::from(name));
        }
        let conn = self.conn_ref();
        match message {
            ClientMessage::CounterRequest { name } => {
                let state = self.node.counter_request(Arc::from(name.as_str()), conn).await;
                self.send(&ServerMessage::CounterResponse { name, state });
            }
            ClientMessage::CounterSync { name, state } => {
                let state = self.node.counter_sync(Arc::from(name.as_str()), state, conn).await;
                self.send(&ServerMessage::CounterUpdate { name, state });
            }
            _ => unreachable!("checked above"),
        }
    }
}
