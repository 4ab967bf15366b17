//! Pacing: when one connection sends its next request, and which moment that request's latency
//! is measured from. This is a sans-IO state machine; the connection driver in `runner` asks it
//! what to do at the current time and tells it what was sent and what was answered.
//!
//! Closed loop keeps `window` requests in flight and measures from the actual send time. Open
//! loop sends on a fixed schedule of *intended* send times and measures from the intended time,
//! so a stall of the server (or of this generator) is charged to every request that should have
//! been sent during it: that is the correction for coordinated omission. It leaves out the
//! clock itself (times are arguments, in nanoseconds since the run's time base) and the wire.

use std::collections::VecDeque;

/// Nanoseconds since the run's time base (one `Instant` shared by every generator thread).
pub type Nanos = u64;

/// Intended send times of one connection in open loop: request `index` is due at
/// `offset_ns + index * interval_ns`. The total rate is spread evenly over the connections, and
/// each connection's schedule is shifted by its share of one interval, so the connections do
/// not all send at the same instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    offset_ns: f64,
    interval_ns: f64,
}

impl Schedule {
    /// The schedule of connection `conn_index` of `conn_count`, when all of them together send
    /// `rate_ops_per_s` operations per second in requests of `ops_per_request` operations (an
    /// average, when requests differ), from `start_ns` on.
    pub fn for_connection(
        start_ns: Nanos,
        rate_ops_per_s: f64,
        ops_per_request: f64,
        conn_count: usize,
        conn_index: usize,
    ) -> Schedule {
        assert!(rate_ops_per_s > 0.0 && rate_ops_per_s.is_finite(), "open loop needs a positive rate");
        assert!(ops_per_request >= 1.0);
        assert!(conn_index < conn_count);
        let requests_per_s_per_conn = rate_ops_per_s / ops_per_request / conn_count as f64;
        let interval_ns = 1e9 / requests_per_s_per_conn;
        let offset_ns = start_ns as f64 + interval_ns * conn_index as f64 / conn_count as f64;
        Schedule { offset_ns, interval_ns }
    }

    pub fn intended_ns(&self, index: u64) -> Nanos {
        // Computed from the index, never by adding intervals, so rounding does not accumulate.
        (self.offset_ns + self.interval_ns * index as f64) as Nanos
    }

    pub fn interval_ns(&self) -> f64 {
        self.interval_ns
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pacing {
    /// Up to `window` requests in flight; the next one goes as soon as a slot frees.
    Closed { window: usize },
    /// Requests go at their scheduled times; at most `window` in flight (a full window delays
    /// sending, but latency still counts from the intended time).
    Open { schedule: Schedule, window: usize },
}

/// What the driver should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextSend {
    /// Send a request now; its latency counts from `intended_ns`.
    Now { intended_ns: Nanos },
    /// Nothing is due before this time.
    At(Nanos),
    /// The in-flight window is full: wait for a reply.
    WindowFull,
    /// No more requests: the run's sending phase is over.
    Finished,
}

/// A request waiting for its reply. `kind` is the caller's label (write or read, ops in it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InFlight<K> {
    pub id: u64,
    pub intended_ns: Nanos,
    pub sent_ns: Nanos,
    pub kind: K,
}

/// The pacing state of one connection. Lives on the connection's generator thread.
#[derive(Debug)]
pub struct Pacer<K> {
    pacing: Pacing,
    /// Requests are not sent at or after this time.
    end_ns: Nanos,
    /// In send order, so ids ascend.
    in_flight: VecDeque<InFlight<K>>,
    /// Requests sent so far (the open-loop schedule index of the next one).
    sent_count: u64,
}

impl<K: Copy> Pacer<K> {
    pub fn new(pacing: Pacing, end_ns: Nanos) -> Pacer<K> {
        let window = match pacing {
            Pacing::Closed { window } | Pacing::Open { window, .. } => window,
        };
        assert!(window > 0, "the in-flight window must hold at least one request");
        Pacer { pacing, end_ns, in_flight: VecDeque::with_capacity(window.min(1024)), sent_count: 0 }
    }

    pub fn poll_send(&self, now_ns: Nanos) -> NextSend {
        match self.pacing {
            Pacing::Closed { window } => {
                if now_ns >= self.end_ns {
                    NextSend::Finished
                } else if self.in_flight.len() >= window {
                    NextSend::WindowFull
                } else {
                    NextSend::Now { intended_ns: now_ns }
                }
            }
            Pacing::Open { schedule, window } => {
                let intended_ns = schedule.intended_ns(self.sent_count);
                if intended_ns >= self.end_ns {
                    NextSend::Finished
                } else if self.in_flight.len() >= window {
                    NextSend::WindowFull
                } else if intended_ns > now_ns {
                    NextSend::At(intended_ns)
                } else {
                    NextSend::Now { intended_ns }
                }
            }
        }
    }

    /// Records a request the driver is sending now, as told by `poll_send`.
    pub fn on_sent(&mut self, id: u64, intended_ns: Nanos, sent_ns: Nanos, kind: K) {
        if let Some(last) = self.in_flight.back() {
            assert!(id > last.id, "request ids ascend: {} after {}", id, last.id);
        }
        assert!(intended_ns <= sent_ns, "a request is never sent before it is due");
        self.in_flight.push_back(InFlight { id, intended_ns, sent_ns, kind });
        self.sent_count += 1;
    }

    /// The reply to request `id` arrived; `None` if it is not in flight (a duplicate, or a
    /// reply this pacer did not ask for).
    pub fn on_reply(&mut self, id: u64) -> Option<InFlight<K>> {
        // Replies come almost always in send order, so the search ends at the front.
        let position = self.in_flight.iter().position(|request| request.id == id)?;
        self.in_flight.remove(position)
    }

    /// A reply that names no request (an `ERROR`, or an ack without a usable id) answers the
    /// oldest request of that kind: a connection's messages are handled in order.
    pub fn on_reply_oldest(&mut self, matches: impl Fn(K) -> bool) -> Option<InFlight<K>> {
        let position = self.in_flight.iter().position(|request| matches(request.kind))?;
        self.in_flight.remove(position)
    }

    pub fn in_flight_count(&self) -> usize {
        self.in_flight.len()
    }

    /// Takes the requests still unanswered (at the end of the drain).
    pub fn take_unanswered(&mut self) -> Vec<InFlight<K>> {
        self.in_flight.drain(..).collect()
    }

    /// Open loop: requests scheduled in `[from_ns, end)` that were never sent because the
    /// window stayed full. Their latency is unknown but at least `end - intended`; the runner
    /// reports them as errors rather than silently leaving them out. Always 0 in closed loop.
    pub fn unsent_count(&self, from_ns: Nanos) -> u64 {
        let Pacing::Open { schedule, .. } = self.pacing else { return 0 };
        let mut count = 0;
        let mut index = self.sent_count;
        loop {
            let intended_ns = schedule.intended_ns(index);
            if intended_ns >= self.end_ns {
                return count;
            }
            if intended_ns >= from_ns {
                count += 1;
            }
            index += 1;
        }
    }
}

/// The latency charged to a request: from the moment it should have been sent to its reply.
pub fn latency_ns(reply_ns: Nanos, intended_ns: Nanos) -> Nanos {
    reply_ns.saturating_sub(intended_ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::LatencyHistogram;
    use std::collections::BTreeMap;

    const MS: Nanos = 1_000_000;

    /// A server with a fixed service time that answers nothing between `stall_from` and
    /// `stall_until`: a request arriving during the stall (or still being served when it
    /// starts) is answered when the stall ends.
    struct StallingServer {
        service_ns: Nanos,
        stall_from_ns: Nanos,
        stall_until_ns: Nanos,
    }

    impl StallingServer {
        fn reply_time(&self, sent_ns: Nanos) -> Nanos {
            let done_ns = sent_ns + self.service_ns;
            if done_ns > self.stall_from_ns && sent_ns < self.stall_until_ns {
                self.stall_until_ns.max(sent_ns) + self.service_ns
            } else {
                done_ns
            }
        }
    }

    /// One answered request, as the simulation saw it.
    #[derive(Debug)]
    struct Outcome {
        intended_ns: Nanos,
        sent_ns: Nanos,
        reply_ns: Nanos,
    }

    /// Drives `pacer` against `server` on a synthetic clock, the way the async driver does:
    /// send when told, otherwise advance the clock to the next due time or the next reply.
    fn simulate(mut pacer: Pacer<()>, server: &StallingServer) -> Vec<Outcome> {
        let mut now_ns: Nanos = 0;
        let mut replies: BTreeMap<(Nanos, u64), ()> = BTreeMap::new();
        let mut outcomes = Vec::new();
        let mut next_id = 1;
        loop {
            // Deliver every reply due by now.
            while let Some((&(reply_ns, id), _)) = replies.first_key_value() {
                if reply_ns > now_ns {
                    break;
                }
                replies.pop_first();
                let request = pacer.on_reply(id).expect("reply to a request in flight");
                outcomes.push(Outcome { intended_ns: request.intended_ns, sent_ns: request.sent_ns, reply_ns });
            }
            let next_reply_ns = replies.first_key_value().map(|(&(reply_ns, _), _)| reply_ns);
            match pacer.poll_send(now_ns) {
                NextSend::Now { intended_ns } => {
                    pacer.on_sent(next_id, intended_ns, now_ns, ());
                    replies.insert((server.reply_time(now_ns), next_id), ());
                    next_id += 1;
                }
                NextSend::At(due_ns) => now_ns = next_reply_ns.map_or(due_ns, |reply_ns| reply_ns.min(due_ns)),
                NextSend::WindowFull => now_ns = next_reply_ns.expect("a full window has replies coming"),
                NextSend::Finished => match next_reply_ns {
                    Some(reply_ns) => now_ns = reply_ns,
                    None => return outcomes,
                },
            }
        }
    }

    fn histogram_of(outcomes: &[Outcome], from: impl Fn(&Outcome) -> Nanos) -> LatencyHistogram {
        let mut histogram = LatencyHistogram::new();
        for outcome in outcomes {
            histogram.record_ns(latency_ns(outcome.reply_ns, from(outcome)), 1);
        }
        histogram
    }

    // Goal: in open loop, a stalled server inflates the latency of every request scheduled
    // during the stall, not only of the one request that was waiting when it began.
    // Method: 1000 requests/s for 2 s on one connection with a window of one request, against a
    // server that answers in 0.1 ms but stalls for 100 ms at t = 1 s; replay on a synthetic
    // clock and compare latency from the intended time with latency from the actual send time.
    #[test]
    fn open_loop_charges_a_stall_to_every_request_scheduled_during_it() {
        let server = StallingServer { service_ns: MS / 10, stall_from_ns: 1_000 * MS, stall_until_ns: 1_100 * MS };
        let schedule = Schedule::for_connection(0, 1_000.0, 1.0, 1, 0);
        let pacer = Pacer::new(Pacing::Open { schedule, window: 1 }, 2_000 * MS);
        let outcomes = simulate(pacer, &server);
        assert_eq!(outcomes.len(), 2_000, "every scheduled request is sent and answered");

        let during_stall: Vec<&Outcome> = outcomes
            .iter()
            .filter(|outcome| {
                outcome.intended_ns >= server.stall_from_ns && outcome.intended_ns < server.stall_until_ns
            })
            .collect();
        assert_eq!(during_stall.len(), 100);
        for outcome in &during_stall {
            let charged = latency_ns(outcome.reply_ns, outcome.intended_ns);
            assert!(
                charged >= server.stall_until_ns - outcome.intended_ns,
                "request due at {} ns was charged only {charged} ns",
                outcome.intended_ns
            );
        }

        // Measured from the actual send time the stall almost disappears: the window held the
        // requests back, so each of them (but the first) saw a fast server.
        let slow_from_send =
            outcomes.iter().filter(|outcome| latency_ns(outcome.reply_ns, outcome.sent_ns) >= 10 * MS).count();
        assert_eq!(slow_from_send, 1, "only the request waiting when the stall began looks slow");

        let corrected = histogram_of(&outcomes, |outcome| outcome.intended_ns).summary(2.0);
        let uncorrected = histogram_of(&outcomes, |outcome| outcome.sent_ns).summary(2.0);
        // 100 of 2000 requests (5%) waited between 1 and 100 ms, so the p99 is in the stall.
        assert!(corrected.p99_us >= 75_000.0, "corrected p99 {} µs", corrected.p99_us);
        assert!(uncorrected.p99_us < 1_000.0, "uncorrected p99 {} µs", uncorrected.p99_us);
        assert!(corrected.max_us >= 99_000.0);
    }

    // Goal: closed loop measures from the send time and keeps exactly `window` requests in
    // flight. Method: a window of 4 against a fast server; the pacer never sends a fifth.
    #[test]
    fn closed_loop_keeps_the_window_full_and_measures_from_the_send() {
        let server = StallingServer { service_ns: MS, stall_from_ns: Nanos::MAX, stall_until_ns: Nanos::MAX };
        let mut pacer: Pacer<()> = Pacer::new(Pacing::Closed { window: 4 }, 100 * MS);
        for id in 1..=4 {
            assert_eq!(pacer.poll_send(0), NextSend::Now { intended_ns: 0 });
            pacer.on_sent(id, 0, 0, ());
        }
        assert_eq!(pacer.poll_send(0), NextSend::WindowFull);
        assert_eq!(pacer.on_reply(2).map(|request| request.id), Some(2));
        assert_eq!(pacer.poll_send(5), NextSend::Now { intended_ns: 5 });
        assert_eq!(pacer.poll_send(100 * MS), NextSend::Finished);
        assert_eq!(pacer.unsent_count(0), 0);

        let outcomes = simulate(Pacer::new(Pacing::Closed { window: 4 }, 100 * MS), &server);
        assert_eq!(outcomes.len(), 400, "4 in flight, 1 ms each, for 100 ms");
        assert!(outcomes.iter().all(|outcome| outcome.intended_ns == outcome.sent_ns));
    }

    // Goal: the open-loop schedule spreads the total rate over connections with staggered
    // phases, and requests the window held back past the end are counted as unsent.
    #[test]
    fn schedule_spreads_rate_and_counts_unsent_requests() {
        // 4000 ops/s in batches of 2 over 4 connections: 500 requests/s each, 2 ms apart.
        let first = Schedule::for_connection(0, 4_000.0, 2.0, 4, 0);
        let third = Schedule::for_connection(0, 4_000.0, 2.0, 4, 2);
        assert_eq!(first.intended_ns(0), 0);
        assert_eq!(first.intended_ns(1), 2 * MS);
        assert_eq!(third.intended_ns(0), MS);
        assert_eq!(third.intended_ns(10), 21 * MS);

        let mut pacer: Pacer<()> = Pacer::new(Pacing::Open { schedule: first, window: 1 }, 10 * MS);
        assert_eq!(pacer.poll_send(0), NextSend::Now { intended_ns: 0 });
        pacer.on_sent(1, 0, 0, ());
        assert_eq!(pacer.poll_send(MS), NextSend::WindowFull);
        pacer.on_reply(1);
        assert_eq!(pacer.poll_send(MS), NextSend::At(2 * MS));
        // Never answered again: requests due at 2, 4, 6, 8 ms were never sent.
        assert_eq!(pacer.unsent_count(0), 4);
        assert_eq!(pacer.unsent_count(5 * MS), 2, "only those due in the measured window");
    }

    // Goal: replies without an id answer the oldest request of the matching kind.
    #[test]
    fn anonymous_replies_answer_the_oldest_matching_request() {
        let mut pacer: Pacer<char> = Pacer::new(Pacing::Closed { window: 8 }, MS);
        pacer.on_sent(1, 0, 0, 'r');
        pacer.on_sent(2, 0, 0, 'w');
        pacer.on_sent(3, 0, 0, 'w');
        assert_eq!(pacer.on_reply_oldest(|kind| kind == 'w').map(|request| request.id), Some(2));
        assert_eq!(pacer.on_reply(9), None);
        assert_eq!(pacer.in_flight_count(), 2);
        assert_eq!(pacer.take_unanswered().len(), 2);
    }
}
