//! The outbox: frames waiting to be written to one connection's socket. Lives on the
//! connection's shard; anything on that shard (the connection's own handlers, deliveries from
//! other shards' writes) pushes into it, and the connection task drains it.
//!
//! It is bounded in bytes and in frames. A push past either bound does not grow it: the
//! connection is marked for closing as a slow consumer, so one stuck reader cannot grow the
//! shard's memory or stall the writers feeding it.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::limits::OUTBOUND_QUEUE_FRAMES_MAX;

/// Why the server closes a connection, with the WebSocket close code and reason it sends
/// (DECISIONS §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    AuthenticationFailed,
    AuthenticationTimeout,
    IdleTimeout,
    MessageTooBig,
    /// The client broke the WebSocket framing (RFC 6455 §7.4.1: 1002), e.g. an unmasked frame.
    ProtocolError,
    /// A text frame that is not UTF-8 (RFC 6455 §8.1: the connection must fail, 1007).
    InvalidUtf8,
    SlowConsumer,
    GoingAway,
    /// The client closed first; its close frame is echoed.
    ClientClosed,
    /// The socket failed; nothing more can be sent.
    SocketError,
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            CloseReason::AuthenticationFailed | CloseReason::AuthenticationTimeout | CloseReason::SlowConsumer => 1008,
            CloseReason::IdleTimeout | CloseReason::ClientClosed | CloseReason::SocketError => 1000,
            CloseReason::MessageTooBig => 1009,
            CloseReason::ProtocolError => 1002,
            CloseReason::InvalidUtf8 => 1007,
            CloseReason::GoingAway => 1001,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            CloseReason::AuthenticationFailed => "authentication failed",
            CloseReason::AuthenticationTimeout => "authentication timeout",
            CloseReason::IdleTimeout => "idle timeout",
            CloseReason::MessageTooBig => "message too big",
            CloseReason::ProtocolError => "protocol error",
            CloseReason::InvalidUtf8 => "invalid utf-8",
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::GoingAway => "going away",
            CloseReason::ClientClosed | CloseReason::SocketError => "",
        }
    }
}

pub struct Outbox {
    frames: RefCell<VecDeque<Bytes>>,
    queued_bytes: Cell<usize>,
    queued_bytes_max: usize,
    close: Cell<Option<CloseReason>>,
    waker: Cell<Option<Waker>>,
}

impl Outbox {
    pub fn new(queued_bytes_max: usize) -> Outbox {
        Outbox {
            frames: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            queued_bytes_max,
            close: Cell::new(None),
            waker: Cell::new(None),
        }
    }

    /// Queues one frame. Returns false, and marks the connection for closing as a slow
    /// consumer, when the frame does not fit; a closing connection takes no more frames.
    pub fn push(&self, frame: Bytes) -> bool {
        if self.close.get().is_some() {
            return false;
        }
        let queued_bytes = self.queued_bytes.get() + frame.len();
        let mut frames = self.frames.borrow_mut();
        if queued_bytes > self.queued_bytes_max || frames.len() >= OUTBOUND_QUEUE_FRAMES_MAX {
            drop(frames);
            self.request_close(CloseReason::SlowConsumer);
            return false;
        }
        self.queued_bytes.set(queued_bytes);
        frames.push_back(frame);
        drop(frames);
        self.wake();
        true
    }

    /// Asks the connection task to close with `reason`. The first reason wins.
    pub fn request_close(&self, reason: CloseReason) {
        if self.close.get().is_none() {
            self.close.set(Some(reason));
        }
        self.wake();
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close.get()
    }

    /// Moves every queued frame into `into` (kept by the caller between rounds).
    pub fn drain_into(&self, into: &mut Vec<Bytes>) {
        let mut frames = self.frames.borrow_mut();
        into.extend(frames.drain(..));
        self.queued_bytes.set(0);
    }

    pub fn is_empty(&self) -> bool {
        self.frames.borrow().is_empty()
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.get()
    }

    fn wake(&self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Completes when there is something to write or a close was requested.
    pub fn ready(&self) -> OutboxReady<'_> {
        OutboxReady { outbox: self, frames_count: true }
    }

    /// Completes when a close was requested.
    pub fn closing(&self) -> OutboxReady<'_> {
        OutboxReady { outbox: self, frames_count: false }
    }
}

pub struct OutboxReady<'a> {
    outbox: &'a Outbox,
    /// Whether queued frames make it ready, or only a close request.
    frames_count: bool,
}

impl Future for OutboxReady<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if (self.frames_count && !self.outbox.is_empty()) || self.outbox.close.get().is_some() {
            return Poll::Ready(());
        }
        self.outbox.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Frames past the byte bound are refused and the connection is marked slow; nothing grows.
    #[test]
    fn refuses_past_the_byte_bound() {
        let outbox = Outbox::new(10);
        assert!(outbox.push(Bytes::from_static(b"12345")));
        assert!(outbox.push(Bytes::from_static(b"12345")));
        assert!(!outbox.push(Bytes::from_static(b"1")));
        assert_eq!(outbox.close_reason(), Some(CloseReason::SlowConsumer));
        assert!(!outbox.push(Bytes::from_static(b"")), "a closing outbox takes nothing");
        let mut drained = Vec::new();
        outbox.drain_into(&mut drained);
        assert_eq!(drained.len(), 2);
        assert_eq!(outbox.queued_bytes(), 0);
    }

    // The first close reason is kept.
    #[test]
    fn first_close_reason_wins() {
        let outbox = Outbox::new(10);
        outbox.request_close(CloseReason::IdleTimeout);
        outbox.request_close(CloseReason::GoingAway);
        assert_eq!(outbox.close_reason(), Some(CloseReason::IdleTimeout));
    }
}
