//! The topic family: `TOPIC_SUB`, `TOPIC_UNSUB`, `TOPIC_PUB` (PROTOCOL §4.6, §6.12). No replies
//! but `ERROR`s: an invalid name is `ERROR 400` (DECISIONS §5); unsubscribing from a topic the
//! connection does not follow, or publishing to one nobody follows, does nothing.

use std::sync::Arc;

use super::{AuthState, Session};
use crate::coord::is_valid_name;
use crate::limits::TOPICS_PER_CONNECTION_MAX;
use crate::protocol::ClientMessage;

const INVALID_TOPIC: &str = "invalid topic name: 1 to 256 characters of A-Z a-z 0-9 _ - . : /";

impl Session {
    pub(super) async fn on_topic(&mut self, message: ClientMessage) {
        match message {
            ClientMessage::TopicSub { topic } => {
                if !is_valid_name(&topic) {
                    return self.send_error(400, INVALID_TOPIC.into());
                }
                if self.coord.topics.contains(topic.as_str()) {
                    return; // The client re-sends every TOPIC_SUB after each AUTH_ACK.
                }
                if self.coord.topics.len() >= TOPICS_PER_CONNECTION_MAX {
                    return self.send_error(
                        429,
                        format!("too many topics on this connection (max {TOPICS_PER_CONNECTION_MAX})"),
                    );
                }
                let topic: Arc<str> = Arc::from(topic);
                self.coord.topics.insert(Arc::clone(&topic));
                self.node.topic_subscribe(topic, self.conn).await;
            }
            ClientMessage::TopicUnsub { topic } => {
                if !is_valid_name(&topic) {
                    return self.send_error(400, INVALID_TOPIC.into());
                }
                if let Some(topic) = self.coord.topics.take(topic.as_str()) {
                    self.node.topic_unsubscribe(vec![topic], self.conn).await;
                }
            }
            ClientMessage::TopicPub { topic, data } => {
                if !is_valid_name(&topic) {
                    return self.send_error(400, INVALID_TOPIC.into());
                }
                // PROTOCOL §6.12: the publisher's identity if known — the JWT `sub`.
                let publisher_id = match &self.auth {
                    AuthState::Authenticated(principal) => principal.user_id.clone(),
                    AuthState::Pending => None,
                };
                self.node.topic_publish(Arc::from(topic), data, self.conn_ref(), publisher_id).await;
            }
            _ => unreachable!("registry routes only TOPIC_SUB, TOPIC_UNSUB and TOPIC_PUB here"),
        }
    }
}
