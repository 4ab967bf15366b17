//! shardgrid::crdt::counter: the PN counter (PROTOCOL.md §6.5): per node, a total of increments
//! and a total of decrements; merging takes the per-node maximum of each, so merges commute
//! and repeat harmlessly.
//!
//! Clients do all the counting; the server only merges and reports. The wire spellings
//! (`p`/`n` and `positive`/`negative`, DECISIONS.md §1.5) are the protocol layer's concern.

use std::collections::BTreeMap;

use crate::model::PnCounterState;

/// One named counter. Lives on the partition's owner shard (the counter name is the key).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PnCounter {
    state: PnCounterState,
}

impl PnCounter {
    pub fn new() -> PnCounter {
        PnCounter::default()
    }

    /// Merges a received state: per node, the larger total wins, separately for increments and
    /// decrements. Entries that are negative, NaN or infinite are not totals any node could
    /// have produced and are ignored. Returns whether any stored total changed or appeared.
    pub fn merge(&mut self, other: &PnCounterState) -> bool {
        let positive_changed = merge_totals(&mut self.state.positive, &other.positive);
        let negative_changed = merge_totals(&mut self.state.negative, &other.negative);
        positive_changed || negative_changed
    }

    /// Σ increments − Σ decrements, summed in node-id order so every replica gets the same
    /// floating-point result from the same state.
    pub fn value(&self) -> f64 {
        let increments: f64 = self.state.positive.values().sum();
        let decrements: f64 = self.state.negative.values().sum();
        increments - decrements
    }

    pub fn state(&self) -> &PnCounterState {
        &self.state
    }
}

fn merge_totals(local: &mut BTreeMap<String, f64>, remote: &BTreeMap<String, f64>) -> bool {
    let mut changed = false;
    for (node_id, &total) in remote {
        if !total.is_finite() || total < 0.0 {
            continue;
        }
        // -0.0 passes the check above; store it as 0.0 so equal states compare and encode alike.
        let total = if total == 0.0 { 0.0 } else { total };
        match local.get_mut(node_id) {
            Some(current) if total > *current => {
                *current = total;
                changed = true;
            }
            Some(_) => {}
            None => {
                local.insert(node_id.clone(), total);
                changed = true;
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::crdt::test_prng::Prng;

    fn state(positive: &[(&str, f64)], negative: &[(&str, f64)]) -> PnCounterState {
        PnCounterState {
            positive: positive.iter().map(|(node, total)| (node.to_string(), *total)).collect(),
            negative: negative.iter().map(|(node, total)| (node.to_string(), *total)).collect(),
        }
    }

    #[test]
    fn merge_takes_the_per_node_maximum_of_each_side() {
        // Goal: §6.5 merge rule and value. Method: merge two overlapping states by hand.
        let mut counter = PnCounter::new();
        assert_eq!(counter.value(), 0.0);
        assert!(counter.merge(&state(&[("a", 5.0), ("b", 2.0)], &[("a", 1.0)])));
        assert_eq!(counter.value(), 6.0);
        assert!(counter.merge(&state(&[("a", 3.0), ("b", 4.0)], &[("a", 1.0), ("c", 2.5)])));
        assert_eq!(counter.state(), &state(&[("a", 5.0), ("b", 4.0)], &[("a", 1.0), ("c", 2.5)]));
        assert_eq!(counter.value(), 5.5);
    }

    #[test]
    fn merge_of_nothing_new_reports_no_change() {
        // Goal: a repeated or stale COUNTER_SYNC is a no-op (DECISIONS §2.1).
        // Method: merge the same state twice, then a smaller one.
        let mut counter = PnCounter::new();
        let full = state(&[("a", 5.0)], &[("b", 1.0)]);
        assert!(counter.merge(&full));
        assert!(!counter.merge(&full));
        assert!(!counter.merge(&state(&[("a", 4.0)], &[("b", 0.0)])));
        assert!(!counter.merge(&PnCounterState::default()));
        assert_eq!(counter.state(), &full);
    }

    #[test]
    fn invalid_totals_are_ignored() {
        // Goal: negative, NaN and infinite entries never enter the state; -0 is stored as 0.
        // Method: merge a state made only of such entries, plus one -0.
        let mut counter = PnCounter::new();
        let junk = state(
            &[("a", -1.0), ("b", f64::NAN), ("c", f64::INFINITY), ("z", -0.0)],
            &[("a", f64::NEG_INFINITY), ("b", -0.5)],
        );
        assert!(counter.merge(&junk));
        assert_eq!(counter.state(), &state(&[("z", 0.0)], &[]));
        assert!(counter.state().positive["z"].is_sign_positive());
        assert!(!counter.merge(&junk));
    }

    fn random_state(prng: &mut Prng) -> PnCounterState {
        const NODES: [&str; 4] = ["a", "b", "c", "d"];
        let mut result = PnCounterState::default();
        for _ in 0..prng.below(6) {
            let node = NODES[prng.index(NODES.len())].to_string();
            let total = match prng.below(10) {
                0 => -1.0,
                1 => f64::NAN,
                2 => 0.5 * prng.below(7) as f64,
                _ => prng.below(20) as f64,
            };
            if prng.below(2) == 0 {
                result.positive.insert(node, total);
            } else {
                result.negative.insert(node, total);
            }
        }
        result
    }

    fn counter_of(input: &PnCounterState) -> PnCounter {
        let mut counter = PnCounter::new();
        counter.merge(input);
        counter
    }

    fn merged(left: &PnCounter, right: &PnCounter) -> PnCounter {
        let mut result = left.clone();
        result.merge(right.state());
        result
    }

    #[test]
    fn merge_is_commutative_associative_and_idempotent() {
        // Goal: the PN counter is a join semilattice and its value does not depend on merge
        // order. Method: random states (with invalid entries mixed in) from seeds, merged in
        // every grouping; a failure prints the seed.
        for seed in 0..256 {
            let mut prng = Prng::from_seed(seed);
            let a = counter_of(&random_state(&mut prng));
            let b = counter_of(&random_state(&mut prng));
            let c = counter_of(&random_state(&mut prng));
            assert_eq!(merged(&a, &b), merged(&b, &a), "commutative, seed={seed}");
            assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)), "associative, seed={seed}");
            assert_eq!(merged(&a, &a), a, "idempotent, seed={seed}");
            assert_eq!(merged(&a, &b).value(), merged(&b, &a).value(), "seed={seed}");
            let mut again = merged(&a, &b);
            assert!(!again.merge(b.state()), "seed={seed}");
        }
    }

    #[test]
    fn any_delivery_order_of_syncs_gives_the_same_state() {
        // Goal: a set of COUNTER_SYNCs applied in any order converges. Method: shuffle a seeded
        // list of states, with repeats, and merge each order into a fresh counter.
        for seed in 0..128 {
            let mut prng = Prng::from_seed(seed);
            let mut syncs: Vec<PnCounterState> = (0..10).map(|_| random_state(&mut prng)).collect();
            let first = syncs.iter().fold(PnCounter::new(), |mut counter, sync| {
                counter.merge(sync);
                counter
            });
            for round in 0..4 {
                prng.shuffle(&mut syncs);
                let mut counter = PnCounter::new();
                for sync in &syncs {
                    counter.merge(sync);
                }
                assert_eq!(counter, first, "seed={seed} round={round}");
            }
        }
    }
}
