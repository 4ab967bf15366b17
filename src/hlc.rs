//! shardgrid::hlc: the hybrid logical clock (PROTOCOL.md §6.1) as a sans-IO state machine.
//!
//! The wall clock is an argument (`wall_ms`) to every call; nothing here reads the system
//! time, so tests drive the clock by hand and replay exactly. What this module leaves out:
//! where the wall time comes from, what a caller does with a rejected remote timestamp
//! (`OP_REJECTED`, DECISIONS.md §1.8), and the wire form of a timestamp.

use compact_str::CompactString;

use crate::model::Timestamp;

/// How far ahead of the local wall clock a remote timestamp may be before it is rejected
/// (PROTOCOL.md §6.1, DECISIONS.md §1.1 and §1.8).
pub const MAX_DRIFT_MS_DEFAULT: u64 = 60_000;

/// A remote timestamp that is more than the clock's max drift ahead of the local wall clock.
/// The clock was not advanced by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("timestamp {remote_millis} is more than {max_drift_ms} ms ahead of wall clock {wall_ms}")]
pub struct ClockDrift {
    pub remote_millis: u64,
    pub wall_ms: u64,
    pub max_drift_ms: u64,
}

/// One hybrid logical clock. Each shard owns its own (it lives on the shard that stamps with
/// it), so `now` and `update` take `&mut self` and no synchronisation is needed.
///
/// Every timestamp `now` returns is strictly greater than every timestamp this clock returned
/// before and than every remote timestamp it accepted in `update`, whatever the wall clock does.
#[derive(Clone, Debug)]
pub struct Hlc {
    /// Inline up to 24 bytes, so a timestamp takes a copy without allocating.
    node_id: CompactString,
    last_millis: u64,
    last_counter: u32,
    max_drift_ms: u64,
}

impl Hlc {
    /// A clock that has not ticked yet, with the default max drift.
    pub fn new(node_id: impl Into<String>) -> Hlc {
        Hlc::with_max_drift(node_id, MAX_DRIFT_MS_DEFAULT)
    }

    pub fn with_max_drift(node_id: impl Into<String>, max_drift_ms: u64) -> Hlc {
        let node_id = CompactString::from(node_id.into());
        // The string form `millis:counter:nodeId` is split on ':' by every reader of OR tags;
        // the node id is validated when the server is configured.
        assert!(!node_id.contains(':'), "node id {node_id:?} contains ':'");
        Hlc { node_id, last_millis: 0, last_counter: 0, max_drift_ms }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn max_drift_ms(&self) -> u64 {
        self.max_drift_ms
    }

    /// The last timestamp this clock issued or moved to (all zeros before the first tick).
    pub fn last(&self) -> Timestamp {
        Timestamp::new(self.last_millis, self.last_counter, self.node_id.clone())
    }

    /// Ticks the clock for a local event or a send and returns the new timestamp.
    pub fn now(&mut self, wall_ms: u64) -> Timestamp {
        let (millis, counter) = self.tick(wall_ms);
        Timestamp::new(millis, counter, self.node_id.clone())
    }

    /// `now` without the node id: the new timestamp's millis and counter.
    pub fn tick(&mut self, wall_ms: u64) -> (u64, u32) {
        if wall_ms > self.last_millis {
            self.last_millis = wall_ms;
            self.last_counter = 0;
        } else {
            (self.last_millis, self.last_counter) = successor(self.last_millis, self.last_counter);
        }
        (self.last_millis, self.last_counter)
    }

    /// Moves the clock past a received timestamp. A remote timestamp more than the max drift
    /// ahead of `wall_ms` is refused and leaves the clock as it was, so one client with a
    /// clock far in the future cannot drag every later server timestamp along with it.
    pub fn update(&mut self, remote: &Timestamp, wall_ms: u64) -> Result<(), ClockDrift> {
        if self.is_too_far_ahead(remote, wall_ms) {
            return Err(ClockDrift { remote_millis: remote.millis, wall_ms, max_drift_ms: self.max_drift_ms });
        }
        let millis = self.last_millis.max(wall_ms).max(remote.millis);
        let (millis, counter) = if millis == self.last_millis && millis == remote.millis {
            successor(millis, self.last_counter.max(remote.counter))
        } else if millis == self.last_millis {
            successor(millis, self.last_counter)
        } else if millis == remote.millis {
            successor(millis, remote.counter)
        } else {
            (millis, 0)
        };
        self.last_millis = millis;
        self.last_counter = counter;
        assert!((self.last_millis, self.last_counter) > (remote.millis, remote.counter));
        Ok(())
    }

    /// Whether `timestamp` is more than the max drift ahead of `wall_ms` (strictly more:
    /// exactly the max drift ahead is still accepted).
    pub fn is_too_far_ahead(&self, timestamp: &Timestamp, wall_ms: u64) -> bool {
        timestamp.millis.saturating_sub(wall_ms) > self.max_drift_ms
    }
}

/// The next (millis, counter) after the given pair: the counter goes up by one, and when it
/// would overflow u32 the clock moves to the next millisecond instead (the reference rule).
fn successor(millis: u64, counter: u32) -> (u64, u32) {
    match counter.checked_add(1) {
        Some(counter) => (millis, counter),
        None => {
            // Reaching u64::MAX milliseconds would take a wall clock 584 million years out.
            let millis = millis.checked_add(1).expect("HLC millis overflowed u64");
            (millis, 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::crdt::test_prng::Prng;

    #[test]
    fn now_uses_wall_time_when_it_moves_forward() {
        // Goal: a wall clock ahead of the last timestamp resets the counter (§6.1 send rule).
        // Method: tick at increasing wall times.
        let mut clock = Hlc::new("server");
        assert_eq!(clock.now(100), Timestamp::new(100, 0, "server"));
        assert_eq!(clock.now(101), Timestamp::new(101, 0, "server"));
        assert_eq!(clock.now(500), Timestamp::new(500, 0, "server"));
    }

    #[test]
    fn now_counts_when_wall_time_stalls_or_goes_back() {
        // Goal: an equal or earlier wall time keeps millis and bumps the counter.
        // Method: tick at the same and then an earlier wall time.
        let mut clock = Hlc::new("server");
        clock.now(100);
        assert_eq!(clock.now(100), Timestamp::new(100, 1, "server"));
        assert_eq!(clock.now(40), Timestamp::new(100, 2, "server"));
        assert_eq!(clock.now(101), Timestamp::new(101, 0, "server"));
    }

    #[test]
    fn now_moves_to_the_next_millisecond_on_counter_overflow() {
        // Goal: the u32 counter never wraps; it rolls into millis + 1 (reference rule).
        // Method: drive the counter to u32::MAX through update, then tick with a stalled wall.
        let mut clock = Hlc::new("server");
        clock.update(&Timestamp::new(100, u32::MAX - 1, "client"), 100).unwrap();
        assert_eq!(clock.last(), Timestamp::new(100, u32::MAX, "server"));
        assert_eq!(clock.now(100), Timestamp::new(101, 0, "server"));
    }

    #[test]
    fn update_follows_each_branch_of_the_receive_rule() {
        // Goal: the four cases of §6.1's receive rule. Method: set up each case explicitly.
        // m == last == remote: max of both counters + 1.
        let mut clock = Hlc::new("server");
        clock.now(100);
        clock.now(100); // (100, 1)
        clock.update(&Timestamp::new(100, 7, "client"), 90).unwrap();
        assert_eq!(clock.last(), Timestamp::new(100, 8, "server"));
        clock.update(&Timestamp::new(100, 2, "client"), 90).unwrap();
        assert_eq!(clock.last(), Timestamp::new(100, 9, "server"));
        // m == last only: own counter + 1.
        clock.update(&Timestamp::new(50, 99, "client"), 90).unwrap();
        assert_eq!(clock.last(), Timestamp::new(100, 10, "server"));
        // m == remote only: remote counter + 1.
        clock.update(&Timestamp::new(120, 4, "client"), 110).unwrap();
        assert_eq!(clock.last(), Timestamp::new(120, 5, "server"));
        // m == wall only: counter 0.
        clock.update(&Timestamp::new(125, 4, "client"), 130).unwrap();
        assert_eq!(clock.last(), Timestamp::new(130, 0, "server"));
    }

    #[test]
    fn update_past_a_remote_counter_at_u32_max_moves_to_the_next_millisecond() {
        // Goal: a remote counter of u32::MAX cannot overflow ours. Method: receive one.
        let mut clock = Hlc::new("server");
        clock.update(&Timestamp::new(100, u32::MAX, "client"), 100).unwrap();
        assert_eq!(clock.last(), Timestamp::new(101, 0, "server"));
        assert!(clock.now(100) > Timestamp::new(100, u32::MAX, "client"));
    }

    #[test]
    fn update_rejects_a_remote_beyond_max_drift_and_stays_put() {
        // Goal: DECISIONS §1.1/§1.8: more than the max drift ahead of wall time is refused and
        // the clock does not move; exactly the max drift is accepted.
        // Method: update with remotes at wall + drift + 1 and wall + drift.
        let mut clock = Hlc::new("server");
        clock.now(1_000);
        let too_far = Timestamp::new(1_000 + MAX_DRIFT_MS_DEFAULT + 1, 0, "client");
        assert!(clock.is_too_far_ahead(&too_far, 1_000));
        assert_eq!(
            clock.update(&too_far, 1_000),
            Err(ClockDrift { remote_millis: too_far.millis, wall_ms: 1_000, max_drift_ms: MAX_DRIFT_MS_DEFAULT })
        );
        assert_eq!(clock.last(), Timestamp::new(1_000, 0, "server"));
        let at_limit = Timestamp::new(1_000 + MAX_DRIFT_MS_DEFAULT, 3, "client");
        assert!(!clock.is_too_far_ahead(&at_limit, 1_000));
        clock.update(&at_limit, 1_000).unwrap();
        assert_eq!(clock.last(), Timestamp::new(at_limit.millis, 4, "server"));
        // A remote behind the wall clock is never too far ahead.
        assert!(!clock.is_too_far_ahead(&Timestamp::new(0, 0, "client"), u64::MAX));
    }

    #[test]
    fn custom_max_drift_is_honoured() {
        // Goal: with_max_drift sets the bound. Method: a 10 ms drift refuses 11 ms ahead.
        let mut clock = Hlc::with_max_drift("server", 10);
        assert_eq!(clock.max_drift_ms(), 10);
        assert!(clock.update(&Timestamp::new(111, 0, "client"), 100).is_err());
        assert!(clock.update(&Timestamp::new(110, 0, "client"), 100).is_ok());
    }

    #[test]
    fn timestamps_only_grow_under_random_wall_clocks_and_remotes() {
        // Goal: the HLC promise: every `now` is above every earlier `now` and every accepted
        // remote, however the wall clock jumps. Method: random walks of the wall clock
        // (including going back), random remote timestamps near it and random counters near
        // u32::MAX; a failure prints the seed to replay.
        for seed in 0..64 {
            let mut prng = Prng::from_seed(seed);
            let mut clock = Hlc::new("server");
            let mut wall_ms: u64 = 1_000_000;
            let mut highest_seen = Timestamp::default();
            for step in 0..2_000 {
                wall_ms = (wall_ms + prng.below(50)).saturating_sub(prng.below(60));
                if prng.below(2) == 0 {
                    let stamp = clock.now(wall_ms);
                    assert!(stamp > highest_seen, "seed={seed} step={step}");
                    highest_seen = stamp;
                } else {
                    let counter =
                        if prng.below(4) == 0 { u32::MAX - prng.below(3) as u32 } else { prng.below(10) as u32 };
                    let millis =
                        (wall_ms + prng.below(2 * MAX_DRIFT_MS_DEFAULT)).saturating_sub(MAX_DRIFT_MS_DEFAULT / 2);
                    let remote = Timestamp::new(millis, counter, "client");
                    let before = clock.last();
                    match clock.update(&remote, wall_ms) {
                        Ok(()) => {
                            assert!(clock.last() > before, "seed={seed} step={step}");
                            if remote > highest_seen {
                                highest_seen = remote;
                            }
                        }
                        Err(drift) => {
                            assert_eq!(clock.last(), before, "seed={seed} step={step}");
                            assert!(drift.remote_millis > wall_ms + MAX_DRIFT_MS_DEFAULT);
                        }
                    }
                }
            }
        }
    }
}
