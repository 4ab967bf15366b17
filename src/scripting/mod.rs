//! shardgrid::scripting: entry processors and conflict resolvers (PROTOCOL §4.10,
//! DECISIONS §7.2) — client-supplied JavaScript run on the owner shard of the entry it touches.
//! `sandbox` runs one call under CPU and memory limits, `convert` carries values between msgpack
//! and JS, `resolvers` keeps the per-map resolver lists. This module joins them to a shard's
//! data: it runs a processor against an entry and turns its answer into an ordinary LWW op,
//! and it consults resolvers when a write conflicts. The mesh hops and replies live in `node`
//! and `session::processors`/`session::resolvers`.
//!
//! `Scripting` lives on every shard (one sandbox per shard, created on first use; every
//! shard's copy of the resolver lists).
//!
//! **Entry processors.** The code runs as `function(value, key, args)` on the key's owner:
//! `value` is the live value (`undefined` when the key is absent, deleted or expired). It
//! returns `{value, result}`: no `value` property leaves the entry alone, `value: undefined`
//! (or `null`) deletes it, any other value is stored; `result` goes back to the client. The
//! write is an LWW put or remove stamped with a fresh server HLC timestamp, applied through the
//! same path as a client op (`Node::apply_local`: events, live queries, the journal), with no
//! TTL. The value is read and the code run in one step on the owner; the write then applies
//! only if the entry is still the one that was read (`settle`), and if another write got in
//! between (possible only while the write path waits, e.g. on storage back-pressure) the
//! processor runs again, so a processor's read-modify-write is atomic. Returning the stored
//! value unchanged, or deleting an absent key, writes nothing. A throw, a compile
//! error, a non-object return, a value msgpack cannot hold, or a limit is `success: false` with
//! the reason, and nothing is written. `newValue` in the reply is the key's value after the
//! call (absent when it has none).
//!
//! **Conflict resolvers.** A map's resolvers (see `resolvers` for order and registration) are
//! consulted on its owner for an LWW write that *conflicts*: the key has a live value and the
//! write's timestamp is newer, so plain LWW would overwrite it. (A write to an absent, deleted
//! or expired key, an older write, which loses anyway, and a remove that carries no record, and
//! so no client timestamp, are applied without asking.) Writes made by entry processors are
//! consulted like client writes, so a resolver's rule holds whoever writes. Each resolver whose
//! `keyPattern` matches runs as `function(context)` with `context = {mapName, key, localValue,
//! remoteValue, localTimestamp, remoteTimestamp, remoteNodeId}` (a remove's `remoteValue` is
//! `null`), highest priority first, until one decides:
//! - `{action: "accept"}`: the write is applied as sent.
//! - `{action: "reject", reason}`: nothing is applied; the writer gets `MERGE_REJECTED
//!   {mapName, key, attemptedValue, reason, timestamp}` and its op is still acknowledged in
//!   `OP_ACK` (with `success: false` in `results` when it asked for a write concern), so the
//!   client stops re-sending a write that will never apply.
//! - `{action: "merge", value}`: `value` is stored instead (`null`: the key is deleted), under a
//!   fresh server timestamp later than the write's, so every copy — the writer's included,
//!   which is sent the stored record as a `SERVER_EVENT` — converges on it. (Stored under the
//!   write's own timestamp, the writer would keep its own value forever: equal timestamps never
//!   replace each other.)
//! - `{action: "local"}`: no opinion; the next resolver decides.
//!
//! A resolver that throws, exceeds a limit or returns anything else is logged and skipped, as
//! if it had said `local`; when no resolver decides, the write is accepted (plain LWW). A
//! broken resolver therefore never blocks writes. The resolvers consulted for one batch on one
//! owner share one CPU budget (the per-call CPU limit); once it is spent, the batch's remaining
//! conflicts are accepted without asking, and that is logged too.

pub mod convert;
pub mod resolvers;
pub mod sandbox;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;

use crate::limits::{
    CLOCK_DRIFT_MS_MAX, KEY_BYTES_MAX, PROCESSOR_CODE_CHARS_MAX, RESOLVER_CODE_CHARS_MAX,
    RESOLVER_KEY_PATTERN_BYTES_MAX, SCRIPT_NAME_CHARS_MAX,
};
use crate::model::{LwwRecord, Timestamp, ValueBytes};
use crate::protocol::{ClientOp, EntryProcessResult, EntryProcessor, OpKind, ResolverDef};
use crate::shard::{ChangeEvent, MergeRejection, MergedWrite, OpOutcome, ShardData};
use resolvers::{Resolver, ResolverTable};
use sandbox::{Limits, ProcessorWrite, Resolution, ResolverContext, Sandbox};

/// The msgpack encoding of nil, the attempted value of a rejected remove.
const NIL_BYTES: &[u8] = &[0xc0];
/// How a processor's write is refused when the entry changed after the processor read it.
/// Never reaches a client: `Node::process_key` runs the processor again.
const ENTRY_CHANGED_REASON: &str = "the entry changed while the processor ran";
const ENTRY_CHANGED_CODE: u16 = 409;

/// An entry processor as it travels to the owners of its keys.
#[derive(Debug)]
pub struct ProcessorCall {
    pub name: String,
    pub code: String,
    pub args: Option<ValueBytes>,
}

/// See the module doc.
pub struct Scripting {
    sandbox: Sandbox,
    pub resolvers: ResolverTable,
    limits: Limits,
    /// `--max-value-bytes`: no script stores a larger value than a client may.
    value_bytes_max: usize,
    /// Processor writes on their way through the write path, by their (unique, fresh)
    /// timestamp: the timestamp of the record the processor read (`None`: no record). The write
    /// applies only if that is still the stored record.
    expected: AHashMap<Timestamp, Option<Timestamp>>,
}

/// A processor run on one key, before its write (if any) is applied.
pub enum Processed {
    /// Nothing to write; the reply is ready.
    Done(EntryProcessResult),
    /// Apply `op` (through the normal write path), then finish the reply with its outcome.
    Write { op: ClientOp, result: Option<ValueBytes> },
}

impl Scripting {
    pub fn new(limits: Limits, value_bytes_max: usize) -> Scripting {
        Scripting {
            sandbox: Sandbox::new(),
            resolvers: ResolverTable::default(),
            limits,
            value_bytes_max,
            expected: AHashMap::new(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Checks that resolver code compiles, without running it.
    pub fn check_resolver_code(&mut self, code: &str) -> Result<(), String> {
        let limits = self.limits;
        self.sandbox.check_compiles(&["context"], code, &limits).map_err(|error| error.to_string())
    }

    /// Runs `processor` against `key` of LWW map `map`, with at most `cpu` of running time, on
    /// the key's owner. A returned op is applied through the write path, which applies it only
    /// if the entry is still the one read here; then `settle` says whether to run again.
    pub fn process(
        &mut self,
        data: &mut ShardData,
        map: &str,
        key: &str,
        processor: &ProcessorCall,
        cpu: Duration,
        wall_ms: u64,
    ) -> Processed {
        let stored = data.lww_map(map).and_then(|records| records.get(key));
        let read_timestamp = stored.map(|record| record.timestamp.clone());
        let current: Option<ValueBytes> =
            stored.filter(|record| record.is_live(wall_ms)).and_then(|record| record.value.clone());
        let limits = Limits { cpu, memory_bytes: self.limits.memory_bytes };
        let outcome = match self.sandbox.run_processor(
            &processor.code,
            current.as_deref(),
            key,
            processor.args.as_deref(),
            &limits,
        ) {
            Ok(outcome) => outcome,
            Err(error) => return Processed::Done(failed(format!("processor {:?} {error}", processor.name))),
        };
        let value = match outcome.write {
            ProcessorWrite::Keep => None,
            ProcessorWrite::Put(bytes) if current.as_ref() == Some(&bytes) => None,
            ProcessorWrite::Delete if current.is_none() => None,
            ProcessorWrite::Put(bytes) => Some(Some(bytes)),
            ProcessorWrite::Delete => Some(None),
        };
        let Some(value) = value else {
            return Processed::Done(EntryProcessResult {
                success: true,
                result: outcome.result,
                new_value: current,
                error: None,
            });
        };
        if let Some(bytes) = value.as_ref().filter(|bytes| bytes.len() > self.value_bytes_max) {
            return Processed::Done(failed(format!(
                "processor {:?} returned a value of {} bytes, over the limit of {} (--max-value-bytes)",
                processor.name,
                bytes.len(),
                self.value_bytes_max
            )));
        }
        let record = LwwRecord { value, timestamp: data.now(wall_ms), ttl_ms: None };
        self.expected.insert(record.timestamp.clone(), read_timestamp);
        let kind = if record.is_tombstone() { OpKind::Remove { record: Some(record) } } else { OpKind::Put(record) };
        let op = ClientOp { id: None, map_name: map.into(), key: key.into(), kind, write_concern: None, timeout: None };
        Processed::Write { op, result: outcome.result }
    }

    /// After a processor's op went through the write path with `outcome`: forgets its
    /// expectation and says whether the op was refused because the entry changed after the
    /// processor read it (then the processor runs again).
    pub fn settle(&mut self, op: &ClientOp, outcome: &OpOutcome) -> bool {
        if let Some(timestamp) = record_timestamp(op) {
            self.expected.remove(timestamp);
        }
        matches!(outcome, OpOutcome::Rejected { code, reason } if *code == ENTRY_CHANGED_CODE && reason == ENTRY_CHANGED_REASON)
    }

    /// Starts applying one batch of ops on their owner, consulting resolvers on conflicts; the
    /// batch's resolver calls share one CPU budget.
    pub fn batch(&mut self) -> Resolving<'_> {
        let cpu_left = self.limits.cpu;
        Resolving { scripting: self, cpu_left, budget_spent_logged: false }
    }
}

/// The reply for a processor whose write went through the write path with `outcome`.
pub fn processed_write(op: &ClientOp, result: Option<ValueBytes>, outcome: OpOutcome) -> EntryProcessResult {
    let written = match &op.kind {
        OpKind::Put(record) | OpKind::Remove { record: Some(record) } => record.value.clone(),
        _ => None,
    };
    match outcome {
        OpOutcome::Applied | OpOutcome::Unchanged => {
            EntryProcessResult { success: true, result, new_value: written, error: None }
        }
        OpOutcome::Merged(merged) => {
            EntryProcessResult { success: true, result, new_value: merged.record.value, error: None }
        }
        OpOutcome::MergeRejected(rejection) => failed(format!("rejected by a conflict resolver: {}", rejection.reason)),
        OpOutcome::Rejected { reason, .. } => failed(reason),
    }
}

/// A `success: false` reply.
pub fn failed(error: String) -> EntryProcessResult {
    EntryProcessResult { success: false, result: None, new_value: None, error: Some(error) }
}

/// One batch being applied on its owner (`Scripting::batch`).
pub struct Resolving<'a> {
    scripting: &'a mut Scripting,
    cpu_left: Duration,
    budget_spent_logged: bool,
}

/// What the resolver chain decided for one conflicting write.
enum Verdict {
    Accept,
    Reject(String),
    Merge(Option<ValueBytes>),
}

impl Resolving<'_> {
    /// Applies `op` to `data` as `ShardData::apply` does, first consulting `op`'s map's
    /// resolvers if it is a conflicting LWW write (see the module doc).
    pub fn apply(&mut self, data: &mut ShardData, op: ClientOp, wall_ms: u64) -> (OpOutcome, Option<ChangeEvent>) {
        if !self.scripting.expected.is_empty() {
            if let Some(read) = record_timestamp(&op).and_then(|timestamp| self.scripting.expected.remove(timestamp)) {
                let stored =
                    data.lww_map(&op.map_name).and_then(|records| records.get(&op.key)).map(|record| &record.timestamp);
                if stored != read.as_ref() {
                    let refused = OpOutcome::Rejected { reason: ENTRY_CHANGED_REASON.into(), code: ENTRY_CHANGED_CODE };
                    return (refused, None);
                }
            }
        }
        let Some(chain) = self.scripting.resolvers.get(&op.map_name).map(Arc::clone) else {
            return data.apply(op, wall_ms);
        };
        let (OpKind::Put(record) | OpKind::Remove { record: Some(record) }) = &op.kind else {
            return data.apply(op, wall_ms);
        };
        if record.timestamp.millis > wall_ms.saturating_add(CLOCK_DRIFT_MS_MAX) {
            return data.apply(op, wall_ms); // refused there, without asking anyone
        }
        let local = data.lww_map(&op.map_name).and_then(|records| records.get_live(&op.key, wall_ms));
        let Some(local) = local.filter(|local| record.timestamp > local.timestamp).cloned() else {
            return data.apply(op, wall_ms);
        };
        let local_value = local.value.as_deref().expect("a live record has a value");
        let context = ResolverContext {
            map_name: &op.map_name,
            key: &op.key,
            local_value,
            remote_value: record.value.as_deref(),
            local_timestamp: &local.timestamp,
            remote_timestamp: &record.timestamp,
        };
        match self.consult(&chain, &context) {
            Verdict::Accept => data.apply(op, wall_ms),
            Verdict::Reject(reason) => {
                let rejection = MergeRejection {
                    attempted_value: record.value.clone().unwrap_or_else(|| ValueBytes::from(NIL_BYTES)),
                    reason,
                    timestamp: record.timestamp.clone(),
                    map_name: op.map_name,
                    key: op.key,
                };
                (OpOutcome::MergeRejected(Box::new(rejection)), None)
            }
            Verdict::Merge(value) => {
                let merged =
                    LwwRecord { value, timestamp: data.now_after(&record.timestamp, wall_ms), ttl_ms: record.ttl_ms };
                let kind = if merged.is_tombstone() {
                    OpKind::Remove { record: Some(merged.clone()) }
                } else {
                    OpKind::Put(merged.clone())
                };
                let (map_name, key) = (op.map_name.clone(), op.key.clone());
                match data.apply(ClientOp { kind, ..op }, wall_ms) {
                    (OpOutcome::Applied, event) => {
                        (OpOutcome::Merged(Box::new(MergedWrite { map_name, key, record: merged })), event)
                    }
                    other => other,
                }
            }
        }
    }

    /// Runs the chain until a resolver decides (see the module doc).
    fn consult(&mut self, chain: &[Resolver], context: &ResolverContext<'_>) -> Verdict {
        for resolver in chain.iter().filter(|resolver| resolver.applies_to(context.key)) {
            if self.cpu_left.is_zero() {
                if !self.budget_spent_logged {
                    self.budget_spent_logged = true;
                    tracing::warn!(
                        map = context.map_name,
                        key = context.key,
                        "resolver CPU budget of this batch spent; accepting its remaining conflicts"
                    );
                }
                return Verdict::Accept;
            }
            let limits = Limits {
                cpu: self.cpu_left.min(self.scripting.limits.cpu),
                memory_bytes: self.scripting.limits.memory_bytes,
            };
            let started = Instant::now();
            let resolution = self.scripting.sandbox.run_resolver(&resolver.code, context, &limits);
            self.cpu_left = self.cpu_left.saturating_sub(started.elapsed());
            match resolution {
                Ok(Resolution::Accept) => return Verdict::Accept,
                Ok(Resolution::Reject { reason }) => return Verdict::Reject(reason),
                Ok(Resolution::Merge { value: Some(bytes) }) if bytes.len() > self.scripting.value_bytes_max => {
                    let size = bytes.len();
                    tracing::warn!(
                        map = context.map_name,
                        key = context.key,
                        resolver = resolver.name.as_str(),
                        "conflict resolver skipped: merged value of {size} bytes is over --max-value-bytes"
                    );
                }
                Ok(Resolution::Merge { value }) => return Verdict::Merge(value),
                Ok(Resolution::Pass) => {}
                Err(error) => {
                    tracing::warn!(
                        map = context.map_name,
                        key = context.key,
                        resolver = resolver.name.as_str(),
                        "conflict resolver skipped: {error}"
                    );
                }
            }
        }
        Verdict::Accept
    }
}

/// The timestamp of an LWW op's record, if it carries one.
fn record_timestamp(op: &ClientOp) -> Option<&Timestamp> {
    match &op.kind {
        OpKind::Put(record) | OpKind::Remove { record: Some(record) } => Some(&record.timestamp),
        _ => None,
    }
}

/// Length as JavaScript counts it (UTF-16 units), which is what the client's limits mean.
fn js_length(text: &str) -> usize {
    text.encode_utf16().count()
}

/// Why an `ENTRY_PROCESS*` processor is refused before it runs, if it is.
pub fn check_processor(processor: &EntryProcessor) -> Result<(), String> {
    check_name(&processor.name, "processor")?;
    check_code(&processor.code, "processor", PROCESSOR_CODE_CHARS_MAX)
}

/// Why a key cannot be processed, if it cannot.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.len() > KEY_BYTES_MAX {
        return Err(format!("key longer than {KEY_BYTES_MAX} bytes"));
    }
    Ok(())
}

/// A `REGISTER_RESOLVER` resolver checked and turned into a `Resolver`, or why it is refused.
/// (Whether the code compiles is checked separately, in the sandbox.)
pub fn check_resolver(resolver: ResolverDef) -> Result<Resolver, String> {
    check_name(&resolver.name, "resolver")?;
    check_code(&resolver.code, "resolver", RESOLVER_CODE_CHARS_MAX)?;
    if let Some(priority) = resolver.priority.filter(|priority| *priority > 100) {
        return Err(format!("resolver priority must be 0 to 100, got {priority}"));
    }
    if let Some(pattern) =
        resolver.key_pattern.as_ref().filter(|pattern| pattern.len() > RESOLVER_KEY_PATTERN_BYTES_MAX)
    {
        return Err(format!(
            "resolver keyPattern longer than {RESOLVER_KEY_PATTERN_BYTES_MAX} bytes ({} bytes)",
            pattern.len()
        ));
    }
    Ok(Resolver {
        name: resolver.name,
        code: Arc::from(resolver.code),
        priority: resolver.priority,
        key_pattern: resolver.key_pattern,
    })
}

fn check_name(name: &str, what: &str) -> Result<(), String> {
    let length = js_length(name);
    if !(1..=SCRIPT_NAME_CHARS_MAX).contains(&length) {
        return Err(format!("{what} name must be 1 to {SCRIPT_NAME_CHARS_MAX} characters, got {length}"));
    }
    Ok(())
}

fn check_code(code: &str, what: &str, max: usize) -> Result<(), String> {
    let length = js_length(code);
    if !(1..=max).contains(&length) {
        return Err(format!("{what} code must be 1 to {max} characters, got {length}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
