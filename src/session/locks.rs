//! The lock family: `LOCK_REQUEST`, `LOCK_RELEASE` (PROTOCOL §4.7, §6.11, DECISIONS §4.1). The
//! owner shard's `LockTable` decides; this side validates and answers. An invalid request (a
//! bad name, ttl 0) gets `ERROR 400` and never a `LOCK_*` reply, because the client takes any
//! `LOCK_RELEASED` for its request as a grant. A waiting request gets no reply until granted.

use std::sync::Arc;

use super::Session;
use crate::coord::is_valid_name;
use crate::coord::locks::RequestOutcome;
use crate::protocol::{ClientMessage, ServerMessage};

const INVALID_LOCK: &str = "invalid lock name: 1 to 256 characters of A-Z a-z 0-9 _ - . : /";

impl Session {
    pub(super) async fn on_lock(&mut self, message: ClientMessage) {
        match message {
            ClientMessage::LockRequest { request_id, name, ttl } => {
                if !is_valid_name(&name) {
                    return self.send_error(400, INVALID_LOCK.into());
                }
                if ttl == Some(0) {
                    return self.send_error(400, "invalid lock ttl: 0 (omit ttl to hold until released)".into());
                }
                let owner = self.node.owner_of(&name);
                if !self.coord.lock_owners.contains(&owner) {
                    self.coord.lock_owners.push(owner);
                }
                let name: Arc<str> = Arc::from(name);
                match self.node.lock_request(Arc::clone(&name), request_id.clone(), ttl, self.conn_ref()).await {
                    Ok(RequestOutcome::Granted { token }) => {
                        self.send(&ServerMessage::LockGranted {
                            request_id,
                            name: name.to_string(),
                            fencing_token: token,
                        });
                    }
                    Ok(RequestOutcome::Waiting) => {}
                    Err(refusal) => self.send_error(429, refusal.message().into()),
                }
            }
            ClientMessage::LockRelease { request_id, name, fencing_token } => {
                if !is_valid_name(&name) {
                    return self.send_error(400, INVALID_LOCK.into());
                }
                // A connection can only hold locks on owners it has asked.
                let owner = self.node.owner_of(&name);
                let success = self.coord.lock_owners.contains(&owner)
                    && self.node.lock_release(Arc::from(name.as_str()), fencing_token, self.conn_ref()).await;
                // PROTOCOL §6.11: the requestId is echoed, an empty string when absent.
                self.send(&ServerMessage::LockReleased { request_id: request_id.unwrap_or_default(), name, success });
            }
            _ => unreachable!("registry routes only LOCK_REQUEST and LOCK_RELEASE here"),
        }
    }
}
