//! The event journal (PROTOCOL §4.11, DECISIONS §7.1): the change events of every map, kept per
//! shard in a bounded ring and numbered so that readers can page through all shards' events in
//! one well-defined order and resume where they stopped.
//!
//! `Journal` lives on every shard and holds the events of the keys that shard owns (the owner
//! appends in `Node::apply_local`, from the `ChangeEvent`s of applied writes only, so a re-sent
//! op journals nothing). `JournalSubscriptions` lives on every shard too, for its own
//! connections' `JOURNAL_SUBSCRIBE`s; live events reach it from the owners.
//!
//! ## Sequence numbers and their order
//!
//! A node-wide counter would need a shared atomic or a round trip per write. Instead each shard
//! counts its own events (`local` = 1, 2, 3, …) and the sequence a client sees interleaves the
//! shards: `sequence = (local - 1) * shard_count + shard + 1`. Sequences are unique, increase
//! with every event of a shard, and with one shard are exactly the protocol's 1, 2, 3, …; the
//! journal's order is the order of sequences, i.e. by `(local, shard)`.
//!
//! Interleaving alone would lose events for readers that resume: a quiet shard's next event
//! could get a smaller sequence than a busy shard's events a reader has already passed. So a
//! read synchronises the counters, Lamport-style, in two rounds: the reader asks every shard
//! for its newest sequence (`head`) and takes the maximum `M`; then it asks every shard for
//! its events in `[fromSequence, M]`, and each shard, before answering, raises its counter so
//! that its future events are numbered above `M`. After the second round no event `<= M` can
//! appear anywhere, so the page (events `<= M` in sequence order, cut at `limit`) is complete,
//! and a reader that resumes from its last sequence + 1 misses nothing. Every write
//! acknowledged before the read began is `<= M` (DECISIONS §4.7). `hasMore` is set when more
//! matching events exist past the page, including ones numbered above `M`. Sequences are
//! therefore not dense (a read makes a shard skip numbers), only increasing; readers that use
//! them as resume points, as the client does, need no more.
//!
//! Bounds: each shard keeps its newest `JOURNAL_EVENTS_PER_SHARD_MAX` events and at most
//! `JOURNAL_BYTES_PER_SHARD_MAX` bytes of them; a reader that falls further behind resumes at
//! the oldest event still kept. The ring holds each event as its change left it (the map's
//! interned name, the key, the timestamp) and builds the wire `JournalEvent` only when a reader
//! or a subscriber needs one. Values of up to `JOURNAL_COPIED_VALUE_BYTES_MAX` bytes are copied
//! into a byte ring beside the events, in event order, and larger ones are shared with the
//! store. Sharing a small value would make evicting its event, thousands of writes later,
//! release a reference count on memory long gone cold: one cache miss and one atomic per value
//! on the write path (a put's new and previous values). Copying costs two short sequential
//! copies, and evicting a copied value only moves the byte ring's front. The copies hold at most
//! two small values per event (5 MB per shard at the default bounds); larger values stay shared,
//! so the journal never doubles the memory of big records.

use std::collections::VecDeque;
use std::sync::Arc;

use compact_str::CompactString;

use crate::limits::{JOURNAL_BYTES_PER_SHARD_MAX, JOURNAL_EVENTS_PER_SHARD_MAX};
use crate::model::{Timestamp, ValueBytes};
use crate::protocol::{JournalEvent, JournalEventType};
use crate::shard::{Change, ChangeEvent, ConnId};

/// The sequence of a shard's `local`-th event (`local` counts from 1).
pub fn global_sequence(local: u64, shard: u64, shard_count: u64) -> u64 {
    debug_assert!(local >= 1 && shard < shard_count);
    (local - 1) * shard_count + shard + 1
}

/// The smallest local count a shard must have reached so that its next event is numbered
/// above `sequence`.
pub fn local_floor_above(sequence: u64, shard: u64, shard_count: u64) -> u64 {
    if sequence < shard + 1 {
        0
    } else {
        (sequence - shard - 1) / shard_count + 1
    }
}

/// A change event before it gets its sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct JournalDraft {
    pub event_type: JournalEventType,
    pub map: Arc<str>,
    pub key: CompactString,
    pub value: Option<ValueBytes>,
    pub previous_value: Option<ValueBytes>,
    pub timestamp: Timestamp,
}

/// The journal's view of one applied change (DECISIONS §7.1): `PUT` when the key had no live
/// value, `UPDATE` when it had one, `DELETE` for removes; OR adds are `PUT`, OR removes
/// `DELETE`. The event is taken apart, so its key, timestamp and values move into the journal
/// without a copy. An OR remove carries no timestamp of its own; it is stamped with the shard's
/// wall clock.
pub fn draft_of(event: ChangeEvent, now_ms: u64, node_id: &str) -> JournalDraft {
    let ChangeEvent { map, key, change, previous } = event;
    let previous_live = previous.filter(|record| record.is_live(now_ms)).and_then(|record| record.value);
    let (event_type, value, previous_value, timestamp) = match change {
        Change::Put(record) => {
            let event_type = if previous_live.is_some() { JournalEventType::Update } else { JournalEventType::Put };
            (event_type, record.value, previous_live, record.timestamp)
        }
        Change::Remove(record) => (JournalEventType::Delete, None, previous_live, record.timestamp),
        Change::OrAdd(record) => (JournalEventType::Put, Some(record.value), None, record.timestamp),
        Change::OrRemove { .. } => (JournalEventType::Delete, None, None, Timestamp::new(now_ms, 0, node_id)),
    };
    JournalDraft { event_type, map, key, value, previous_value, timestamp }
}

/// What one shard answers a read: its matching events in range, and whether more match.
#[derive(Clone, Debug, Default)]
pub struct JournalPage {
    pub events: Vec<Arc<JournalEvent>>,
    pub more: bool,
}

/// Values up to this size are copied into the journal's byte ring, larger ones shared with the
/// store (see the module doc).
const JOURNAL_COPIED_VALUE_BYTES_MAX: usize = 256;

/// Bytes of evicted values the byte ring drops at once.
const JOURNAL_DEAD_BYTES_MAX: usize = 64 * 1024;

/// A value as the ring keeps it.
#[derive(Debug)]
enum KeptValue {
    Absent,
    /// `len` bytes of the byte ring from absolute position `start`.
    Copied {
        start: u64,
        len: u32,
    },
    Shared(ValueBytes),
}

impl KeptValue {
    fn len(&self) -> usize {
        match self {
            KeptValue::Absent => 0,
            KeptValue::Copied { len, .. } => *len as usize,
            KeptValue::Shared(value) => value.len(),
        }
    }
}

/// One kept event: its sequence and the change as drafted, values as kept.
#[derive(Debug)]
struct JournalEntry {
    sequence: u64,
    event_type: JournalEventType,
    map: Arc<str>,
    key: CompactString,
    value: KeptValue,
    previous_value: KeptValue,
    timestamp: Timestamp,
}

/// See the module doc. Lives on every shard, for the keys it owns.
pub struct Journal {
    shard: u64,
    shard_count: u64,
    node_id: Arc<str>,
    /// This shard's event count, raised by reads (see the module doc).
    last_local: u64,
    events: VecDeque<JournalEntry>,
    /// The copied values of `events`, in event order (each event's value, then its previous
    /// value), after the first `values_dead` bytes, which belonged to evicted events;
    /// `values[0]` is at absolute position `values_front`.
    values: VecDeque<u8>,
    values_front: u64,
    values_dead: usize,
    bytes: usize,
    events_max: usize,
    bytes_max: usize,
}

/// Bytes an event holds, near enough for the ring's byte bound. The map name is shared with
/// the store and counted once there.
fn event_bytes(entry: &JournalEntry) -> usize {
    const FIXED_BYTES: usize = 128;
    FIXED_BYTES + entry.key.len() + entry.timestamp.node_id.len() + entry.value.len() + entry.previous_value.len()
}

impl Journal {
    pub fn new(shard: usize, shard_count: usize, node_id: &str) -> Journal {
        Journal::with_bounds(shard, shard_count, node_id, JOURNAL_EVENTS_PER_SHARD_MAX, JOURNAL_BYTES_PER_SHARD_MAX)
    }

    pub fn with_bounds(
        shard: usize,
        shard_count: usize,
        node_id: &str,
        events_max: usize,
        bytes_max: usize,
    ) -> Journal {
        assert!(shard < shard_count);
        assert!(events_max > 0);
        Journal {
            shard: shard as u64,
            shard_count: shard_count as u64,
            node_id: Arc::from(node_id),
            last_local: 0,
            events: VecDeque::new(),
            values: VecDeque::new(),
            values_front: 0,
            values_dead: 0,
            bytes: 0,
            events_max,
            bytes_max,
        }
    }

    /// Numbers and keeps one event, dropping the oldest past the bounds; returns its sequence.
    pub fn append(&mut self, draft: JournalDraft) -> u64 {
        self.last_local += 1;
        let sequence = global_sequence(self.last_local, self.shard, self.shard_count);
        debug_assert!(self.events.back().is_none_or(|last| last.sequence < sequence));
        let JournalDraft { event_type, map, key, value, previous_value, timestamp } = draft;
        let value = self.keep(value);
        let previous_value = self.keep(previous_value);
        let entry = JournalEntry { sequence, event_type, map, key, value, previous_value, timestamp };
        self.bytes += event_bytes(&entry);
        self.events.push_back(entry);
        // The newest event is always kept, even one larger than the byte bound on its own.
        while self.events.len() > self.events_max || (self.bytes > self.bytes_max && self.events.len() > 1) {
            let oldest = self.events.pop_front().expect("more than one event");
            self.bytes -= event_bytes(&oldest);
            // Copied values leave the byte ring's front in the order they entered it; the
            // bytes are dropped in bulk once enough have gone.
            for kept in [&oldest.value, &oldest.previous_value] {
                if let KeptValue::Copied { start, len } = *kept {
                    debug_assert_eq!(start, self.values_front + self.values_dead as u64);
                    self.values_dead += len as usize;
                }
            }
            if self.values_dead >= JOURNAL_DEAD_BYTES_MAX {
                self.values.drain(..self.values_dead);
                self.values_front += self.values_dead as u64;
                self.values_dead = 0;
            }
        }
        sequence
    }

    /// The newest event kept, as sent to subscribers, with the map's interned name.
    pub fn newest_event(&self) -> Option<(Arc<str>, JournalEvent)> {
        self.events.back().map(|entry| (Arc::clone(&entry.map), self.to_event(entry)))
    }

    fn keep(&mut self, value: Option<ValueBytes>) -> KeptValue {
        match value {
            None => KeptValue::Absent,
            Some(value) if value.len() <= JOURNAL_COPIED_VALUE_BYTES_MAX => {
                let start = self.values_front + self.values.len() as u64;
                self.values.extend(value.iter());
                KeptValue::Copied { start, len: value.len() as u32 }
            }
            Some(value) => KeptValue::Shared(value),
        }
    }

    fn value_of(&self, kept: &KeptValue) -> Option<ValueBytes> {
        match kept {
            KeptValue::Absent => None,
            KeptValue::Copied { start, len } => {
                let offset = (start - self.values_front) as usize;
                Some(self.values.range(offset..offset + *len as usize).copied().collect())
            }
            KeptValue::Shared(value) => Some(Arc::clone(value)),
        }
    }

    fn to_event(&self, entry: &JournalEntry) -> JournalEvent {
        JournalEvent {
            sequence: entry.sequence,
            event_type: entry.event_type,
            map_name: entry.map.to_string(),
            key: entry.key.to_string(),
            value: self.value_of(&entry.value),
            previous_value: self.value_of(&entry.previous_value),
            timestamp: entry.timestamp.clone(),
            node_id: self.node_id.to_string(),
            metadata: None,
        }
    }

    /// The newest sequence this shard has used or promised to stay above (0: none).
    pub fn head(&self) -> u64 {
        if self.last_local == 0 {
            0
        } else {
            global_sequence(self.last_local, self.shard, self.shard_count)
        }
    }

    /// The second round of a read: first promises that every future event here is numbered
    /// above `upto`, then returns up to `limit` events of `map` (all maps if `None`) with
    /// `from <= sequence <= upto`, and whether more matching events exist past them.
    pub fn read(&mut self, from: u64, upto: u64, limit: usize, map: Option<&str>) -> JournalPage {
        self.last_local = self.last_local.max(local_floor_above(upto, self.shard, self.shard_count));
        let start = self.events.partition_point(|event| event.sequence < from);
        let mut page = JournalPage::default();
        for entry in self.events.range(start..) {
            if map.is_some_and(|map| *entry.map != *map) {
                continue;
            }
            if entry.sequence > upto || page.events.len() == limit {
                page.more = true;
                break;
            }
            page.events.push(Arc::new(self.to_event(entry)));
        }
        page
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// Merges every shard's page for one read: events in sequence order, cut at `limit`;
/// `hasMore` if any shard had more or the pages together exceed the limit.
pub fn merge_pages(pages: Vec<JournalPage>, limit: usize) -> (Vec<Arc<JournalEvent>>, bool) {
    let mut more = false;
    let mut events = Vec::new();
    for page in pages {
        more |= page.more;
        events.extend(page.events);
    }
    events.sort_by_key(|event| event.sequence);
    if events.len() > limit {
        events.truncate(limit);
        more = true;
    }
    (events, more)
}

/// Which events a journal subscription wants. An absent or empty `types` list means all types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalFilter {
    pub map: Option<String>,
    pub types: Option<Vec<JournalEventType>>,
}

impl JournalFilter {
    pub fn matches(&self, map: &str, event_type: JournalEventType) -> bool {
        self.map.as_deref().is_none_or(|wanted| wanted == map)
            && self.types.as_ref().is_none_or(|types| types.is_empty() || types.contains(&event_type))
    }
}

struct JournalSubscription {
    conn: ConnId,
    id: String,
    filter: JournalFilter,
}

/// This shard's connections' `JOURNAL_SUBSCRIBE`s. Lives on the connections' shard.
#[derive(Default)]
pub struct JournalSubscriptions {
    subscriptions: Vec<JournalSubscription>,
}

impl JournalSubscriptions {
    /// Adds a subscription; one with the same connection and id is replaced (returns true).
    pub fn add(&mut self, conn: ConnId, id: String, filter: JournalFilter) -> bool {
        let replaced = self.remove(conn, &id);
        self.subscriptions.push(JournalSubscription { conn, id, filter });
        replaced
    }

    /// Removes one subscription; returns whether it existed.
    pub fn remove(&mut self, conn: ConnId, id: &str) -> bool {
        let before = self.subscriptions.len();
        self.subscriptions.retain(|subscription| !(subscription.conn == conn && subscription.id == id));
        self.subscriptions.len() != before
    }

    /// The connections with a subscription matching this event, once per subscription.
    pub fn matching<'a>(&'a self, map: &'a str, event_type: JournalEventType) -> impl Iterator<Item = ConnId> + 'a {
        self.subscriptions
            .iter()
            .filter(move |subscription| subscription.filter.matches(map, event_type))
            .map(|subscription| subscription.conn)
    }

    pub fn len(&self) -> usize {
        self.subscriptions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subscriptions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::test_prng::Prng;
    use crate::model::LwwRecord;

    fn draft(map: &str, key: &str) -> JournalDraft {
        JournalDraft {
            event_type: JournalEventType::Put,
            map: Arc::from(map),
            key: key.into(),
            value: Some(ValueBytes::from(&[0x01][..])),
            previous_value: None,
            timestamp: Timestamp::new(1, 0, "n"),
        }
    }

    // Goal: sequences are unique across shards, increase per shard, and one shard numbers
    // 1, 2, 3, … as the protocol says. Method: enumerate small cases.
    #[test]
    fn interleaved_sequences() {
        assert_eq!((1..=3).map(|local| global_sequence(local, 0, 1)).collect::<Vec<_>>(), vec![1, 2, 3]);
        let mut seen = std::collections::BTreeSet::new();
        for shard_count in 1..5u64 {
            seen.clear();
            for shard in 0..shard_count {
                for local in 1..50 {
                    assert!(seen.insert(global_sequence(local, shard, shard_count)));
                }
            }
        }
    }

    // Goal: after a read up to `upto`, a shard's next event is numbered above it, and the floor
    // is the smallest that does so. Method: random shards, counts and bounds.
    #[test]
    fn floor_is_the_least_count_above() {
        let mut prng = Prng::from_seed(7);
        for _ in 0..10_000 {
            let shard_count = 1 + prng.below(16);
            let shard = prng.below(shard_count);
            let upto = prng.below(10_000);
            let floor = local_floor_above(upto, shard, shard_count);
            assert!(global_sequence(floor + 1, shard, shard_count) > upto, "{shard}/{shard_count} upto {upto}");
            assert!(
                floor == 0 || global_sequence(floor, shard, shard_count) <= upto,
                "{shard}/{shard_count} upto {upto}"
            );
        }
    }

    /// One step of the simulated node below.
    enum Step {
        Write(usize),
        Read,
    }

    // Goal: a reader paging with the two-round read over shards written at very different
    // rates sees every event exactly once, in increasing sequence order, resuming from its last
    // sequence + 1. Method: seeded interleavings of writes on random shards and paged reads
    // with random limits, in one thread.
    #[test]
    fn paged_reader_sees_every_event_once() {
        for seed in 0..32 {
            let mut prng = Prng::from_seed(seed);
            let shard_count = 1 + prng.below(4) as usize;
            let mut journals: Vec<Journal> =
                (0..shard_count).map(|shard| Journal::new(shard, shard_count, "n")).collect();
            let mut written = 0usize;
            let mut read: Vec<u64> = Vec::new();
            let mut from = 0;
            for _ in 0..2_000 {
                // Shard 0 is written far more often than the others.
                let step = if prng.below(3) == 0 {
                    Step::Read
                } else {
                    Step::Write(if prng.below(4) == 0 { prng.index(shard_count) } else { 0 })
                };
                match step {
                    Step::Write(shard) => {
                        journals[shard].append(draft("m", &format!("k{written}")));
                        written += 1;
                    }
                    Step::Read => {
                        let limit = 1 + prng.index(5);
                        let upto = journals.iter().map(Journal::head).max().unwrap();
                        let pages = journals.iter_mut().map(|journal| journal.read(from, upto, limit, None)).collect();
                        let (events, _) = merge_pages(pages, limit);
                        for event in &events {
                            assert!(read.last().is_none_or(|last| *last < event.sequence), "seed {seed}: out of order");
                            read.push(event.sequence);
                        }
                        if let Some(last) = events.last() {
                            from = last.sequence + 1;
                        }
                    }
                }
            }
            // Drain what is left.
            loop {
                let upto = journals.iter().map(Journal::head).max().unwrap();
                let pages = journals.iter_mut().map(|journal| journal.read(from, upto, 100, None)).collect();
                let (events, more) = merge_pages(pages, 100);
                read.extend(events.iter().map(|event| event.sequence));
                match events.last() {
                    Some(last) => from = last.sequence + 1,
                    None => {
                        assert!(!more);
                        break;
                    }
                }
            }
            assert_eq!(read.len(), written, "seed {seed}: every event read exactly once");
        }
    }

    // Goal: the ring keeps the newest events within both bounds. Method: overflow each bound.
    #[test]
    fn ring_is_bounded_by_count_and_bytes() {
        let mut journal = Journal::with_bounds(0, 1, "n", 3, usize::MAX);
        for index in 0..5 {
            journal.append(draft("m", &format!("k{index}")));
        }
        assert_eq!(journal.len(), 3);
        let page = journal.read(0, journal.head(), 10, None);
        assert_eq!(page.events.iter().map(|event| event.sequence).collect::<Vec<_>>(), vec![3, 4, 5]);

        let mut journal = Journal::with_bounds(0, 1, "n", 100, 300);
        for index in 0..10 {
            journal.append(draft("m", &format!("k{index}")));
        }
        assert!(journal.bytes <= 300 && !journal.is_empty());
    }

    // Goal: every kept event reads back its own value and previous value, whether they were
    // copied into the byte ring or shared, while the ring evicts and wraps. Method: seeded
    // appends of values from empty to past the copy limit (some absent), reading the whole
    // journal back after each and comparing with the drafts still expected to be kept.
    #[test]
    fn values_read_back_through_eviction() {
        for seed in 0..8 {
            let mut prng = Prng::from_seed(seed);
            let mut journal = Journal::with_bounds(0, 1, "n", 1 + prng.index(6), usize::MAX);
            let mut expected: VecDeque<JournalDraft> = VecDeque::new();
            let value = |prng: &mut Prng| {
                let len = match prng.below(5) {
                    0 => return None,
                    1 => JOURNAL_COPIED_VALUE_BYTES_MAX + prng.index(64),
                    2 => JOURNAL_COPIED_VALUE_BYTES_MAX - prng.index(2),
                    _ => prng.index(100),
                };
                let fill = prng.below(256) as u8;
                Some(ValueBytes::from((0..len).map(|index| fill.wrapping_add(index as u8)).collect::<Vec<u8>>()))
            };
            for index in 0..200 {
                let mut drafted = draft("m", &format!("k{index}"));
                drafted.value = value(&mut prng);
                drafted.previous_value = value(&mut prng);
                journal.append(drafted.clone());
                expected.push_back(drafted);
                if expected.len() > journal.events_max {
                    expected.pop_front();
                }
                let page = journal.read(0, journal.head(), usize::MAX, None);
                assert_eq!(page.events.len(), expected.len(), "seed {seed}");
                for (event, drafted) in page.events.iter().zip(&expected) {
                    assert_eq!(event.key, drafted.key.as_str());
                    assert_eq!(event.value, drafted.value, "seed {seed} event {}", event.sequence);
                    assert_eq!(event.previous_value, drafted.previous_value, "seed {seed} event {}", event.sequence);
                }
            }
            // Only the kept events' copied values are left in the byte ring.
            let copied: usize = expected
                .iter()
                .flat_map(|drafted| [&drafted.value, &drafted.previous_value])
                .filter_map(|value| value.as_ref().map(|value| value.len()))
                .filter(|len| *len <= JOURNAL_COPIED_VALUE_BYTES_MAX)
                .sum();
            assert_eq!(journal.values.len() - journal.values_dead, copied, "seed {seed}");
        }
    }

    // Goal: limit, range and map filter shape a shard's page and `more`. Method: ten events
    // over two maps, read in pieces.
    #[test]
    fn read_filters_and_limits() {
        let mut journal = Journal::new(0, 1, "n");
        for index in 0..10 {
            journal.append(draft(if index % 2 == 0 { "even" } else { "odd" }, &format!("k{index}")));
        }
        let page = journal.read(1, 10, 3, Some("odd"));
        assert_eq!(page.events.iter().map(|event| event.sequence).collect::<Vec<_>>(), vec![2, 4, 6]);
        assert!(page.more);
        let page = journal.read(7, 10, 3, Some("odd"));
        assert_eq!(page.events.iter().map(|event| event.sequence).collect::<Vec<_>>(), vec![8, 10]);
        assert!(!page.more);
        let page = journal.read(1, 4, 10, None);
        assert_eq!(page.events.len(), 4);
        assert!(page.more, "events above the bound count as more");
        assert_eq!(journal.read(11, 20, 10, None).events.len(), 0);
        // The read promised to stay above 20.
        assert_eq!(journal.append(draft("m", "k")), 21);
    }

    // Goal: event types follow DECISIONS §7.1 from the previous record's liveness.
    // Method: a put over nothing, over a live value, over a tombstone, and a remove.
    #[test]
    fn drafts_follow_the_decisions() {
        let ts = |millis| Timestamp::new(millis, 0, "c");
        let live = LwwRecord { value: Some(ValueBytes::from(&[0x05][..])), timestamp: ts(1), ttl_ms: None };
        let tombstone = LwwRecord { value: None, timestamp: ts(1), ttl_ms: None };
        let expired = LwwRecord { value: Some(ValueBytes::from(&[0x05][..])), timestamp: ts(1), ttl_ms: Some(1) };
        let put = LwwRecord { value: Some(ValueBytes::from(&[0x06][..])), timestamp: ts(2), ttl_ms: None };
        let event = |change, previous| ChangeEvent { map: Arc::from("m"), key: "k".into(), change, previous };
        let over = |previous| draft_of(event(Change::Put(put.clone()), previous), 100, "n");
        assert_eq!(over(None).event_type, JournalEventType::Put);
        assert_eq!(over(Some(tombstone.clone())).event_type, JournalEventType::Put);
        assert_eq!(over(Some(expired)).event_type, JournalEventType::Put);
        let update = over(Some(live.clone()));
        assert_eq!(update.event_type, JournalEventType::Update);
        assert_eq!(update.previous_value.as_deref(), Some(&[0x05][..]));
        let delete = draft_of(event(Change::Remove(tombstone), Some(live)), 100, "n");
        assert_eq!(
            (delete.event_type, delete.value, delete.previous_value.as_deref()),
            (JournalEventType::Delete, None, Some(&[0x05][..]))
        );
        let or_remove = draft_of(event(Change::OrRemove { tag: "t".into() }, None), 100, "n");
        assert_eq!((or_remove.event_type, or_remove.timestamp.millis), (JournalEventType::Delete, 100));
    }

    // Goal: subscriptions filter by map and type, and an id is replaced, not duplicated.
    #[test]
    fn subscriptions_filter_and_replace() {
        let mut subscriptions = JournalSubscriptions::default();
        let all = JournalFilter { map: None, types: None };
        let deletes_of_m = JournalFilter { map: Some("m".into()), types: Some(vec![JournalEventType::Delete]) };
        assert!(!subscriptions.add(1, "a".into(), all.clone()));
        assert!(subscriptions.add(1, "a".into(), all));
        subscriptions.add(2, "b".into(), deletes_of_m);
        assert_eq!(subscriptions.len(), 2);
        assert_eq!(subscriptions.matching("m", JournalEventType::Put).collect::<Vec<_>>(), vec![1]);
        assert_eq!(subscriptions.matching("m", JournalEventType::Delete).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(subscriptions.matching("x", JournalEventType::Delete).collect::<Vec<_>>(), vec![1]);
        assert!(subscriptions.remove(1, "a"));
        assert!(!subscriptions.remove(1, "a"));
        assert!(JournalFilter { map: None, types: Some(vec![]) }.matches("m", JournalEventType::Put));
    }
}
