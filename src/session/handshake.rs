//! The handshake and liveness family: `AUTH`, `DEVICE_HELLO`, `PING` (PROTOCOL §3, §4.1,
//! DECISIONS §5).

use super::{AuthState, Session};
use crate::net::outbox::CloseReason;
use crate::node::wall_ms;
use crate::protocol::{ClientMessage, ServerMessage};

impl Session {
    pub(super) fn on_handshake(&mut self, message: ClientMessage) {
        match message {
            ClientMessage::Auth { token, .. } => self.on_auth(&token),
            ClientMessage::DeviceHello { .. } => {
                // JWT mode: no reply (the client waits for AUTH_REQUIRED and a token). No-auth
                // mode: DEVICE_ACK ends the client's grace wait at once (PROTOCOL §3.2).
                if self.node.verifier().is_none() {
                    self.send(&ServerMessage::DeviceAck { device_id: None, device_token: None });
                }
            }
            _ => unreachable!("registry routes only AUTH and DEVICE_HELLO here"),
        }
    }

    fn on_auth(&mut self, token: &str) {
        let Some(verifier) = self.node.verifier() else {
            // No-auth mode: answer every AUTH, or a client holding a token waits forever (§3.2).
            self.send(&ServerMessage::AuthAck {
                protocol_version: None,
                user_id: None,
                device_id: None,
                device_token: None,
            });
            return;
        };
        if self.is_authenticated() {
            return; // The client sends AUTH twice (on open and on AUTH_REQUIRED): ignore repeats.
        }
        match verifier.verify(token) {
            Ok(principal) => {
                let user_id = principal.user_id.clone();
                self.auth = AuthState::Authenticated(principal);
                self.refresh_idle_deadline();
                self.send(&ServerMessage::AuthAck {
                    protocol_version: None,
                    user_id,
                    device_id: None,
                    device_token: None,
                });
            }
            Err(error) => {
                tracing::debug!(conn = self.conn, %error, "authentication failed");
                self.send(&ServerMessage::AuthFail {
                    error: Some(format!("Authentication failed: {error}")),
                    code: Some(401),
                });
                self.outbox.request_close(CloseReason::AuthenticationFailed);
            }
        }
    }

    pub(super) fn on_ping(&mut self, message: ClientMessage) {
        let ClientMessage::Ping { timestamp } = message else { unreachable!("registry routes only PING here") };
        if self.is_authenticated() {
            self.refresh_idle_deadline();
        }
        self.send(&ServerMessage::Pong { timestamp, server_time: wall_ms() });
    }

    /// Any PING refreshes the idle timer; other traffic does not (PROTOCOL §1.2).
    fn refresh_idle_deadline(&self) {
        let deadline_ms = wall_ms() + self.node.config.idle_timeout_ms;
        self.node.set_deadline(self.conn, deadline_ms, CloseReason::IdleTimeout);
    }
}
