//! The write family: `CLIENT_OP` and `OP_BATCH` (PROTOCOL §4.2, DECISIONS §1, §2, §4.6).
//! Ops are routed to the owner shard of each key's partition, applied there in parallel, and
//! acknowledged once with one `OP_ACK`; refused ops get an `OP_REJECTED` first. A batch that
//! asks for `PERSISTED` (op- or batch-level) is acknowledged only once every owner involved has
//! fdatasynced its records, and then says `PERSISTED`; if that fails, its ops say so
//! (`success: false`) and it is never acknowledged as persisted.

use compact_str::CompactString;
use std::sync::Arc;

use super::Session;
use crate::limits::{KEY_BYTES_MAX, MAP_NAME_BYTES_MAX};
use crate::model::WriteConcern;
use crate::protocol::{ClientMessage, ClientOp, OpKind, OpResult, ServerMessage};
use crate::shard::OpOutcome;

/// The level every applied write reaches without a durable log. `PERSISTED` is claimed only
/// after an fdatasync covered the batch (DECISIONS §4.6).
const APPLIED_LEVEL: WriteConcern = WriteConcern::Applied;

/// Why an op is refused before it is routed, if it is: (reason, code).
fn check_op(op: &ClientOp, value_bytes_max: usize) -> Result<(), (String, u16)> {
    if op.map_name.is_empty() || op.map_name.len() > MAP_NAME_BYTES_MAX {
        return Err((format!("map name must be 1 to {MAP_NAME_BYTES_MAX} bytes"), 400));
    }
    if op.key.len() > KEY_BYTES_MAX {
        return Err((format!("key longer than {KEY_BYTES_MAX} bytes"), 400));
    }
    let value_len = match &op.kind {
        OpKind::Put(record) => record.value.as_ref().map_or(0, |value| value.len()),
        OpKind::OrAdd(record) => record.value.len(),
        // Removes are never size-checked (PROTOCOL §7).
        OpKind::Remove { .. } | OpKind::OrRemove { .. } | OpKind::Noop => 0,
    };
    if value_len > value_bytes_max {
        return Err((format!("value of {value_len} bytes exceeds the limit of {value_bytes_max}"), 413));
    }
    Ok(())
}

impl Session {
    pub(super) async fn on_write(&mut self, message: ClientMessage) {
        let (mut ops, batch_concern) = match message {
            ClientMessage::ClientOp(op) => (vec![op], None),
            ClientMessage::OpBatch { ops, write_concern, .. } => (ops, write_concern),
            _ => unreachable!("registry routes only CLIENT_OP and OP_BATCH here"),
        };
        let ops_max = self.node.config.max_ops_per_batch;
        if ops.len() > ops_max {
            return self.send_error(413, format!("batch exceeds maximum op count ({ops_max})"));
        }
        // The ack names the batch's last op (PROTOCOL §4.2); "unknown" when it has no id.
        let last_id = ops.last().and_then(|op| op.id.clone()).unwrap_or_else(|| CompactString::const_new("unknown"));
        // The ids stay here for the replies; the owners need only the ops.
        let receipts: Vec<(Option<CompactString>, Option<WriteConcern>)> =
            ops.iter_mut().map(|op| (op.id.take(), op.write_concern.or(batch_concern))).collect();

        let mut outcomes: Vec<Option<OpOutcome>> = vec![None; ops.len()];
        let value_bytes_max = self.node.config.max_value_bytes;
        // Usually every op passes its checks and the batch goes on as it came (`None`: the
        // routed ops are the batch's, in order); otherwise the positions of those that passed.
        let (routed, routed_positions) = if ops.iter().all(|op| check_op(op, value_bytes_max).is_ok()) {
            (ops, None)
        } else {
            let mut routed = Vec::with_capacity(ops.len());
            let mut routed_positions = Vec::with_capacity(ops.len());
            for (position, op) in ops.into_iter().enumerate() {
                match check_op(&op, value_bytes_max) {
                    Ok(()) => {
                        routed_positions.push(position);
                        routed.push(op);
                    }
                    Err((reason, code)) => outcomes[position] = Some(OpOutcome::Rejected { reason, code }),
                }
            }
            (routed, Some(routed_positions))
        };
        // A write makes the writer interested in its maps (DECISIONS §3.1); the announcement
        // reaches every shard before the ops do.
        let mut maps: Vec<CompactString> = Vec::new();
        for op in &routed {
            if !maps.contains(&op.map_name) {
                maps.push(op.map_name.clone());
            }
        }
        for map in &maps {
            self.add_interest(map).await;
        }
        // Waiting on the disk only makes sense where the disk is synced: with the memory
        // backend or --fsync never, PERSISTED is answered with APPLIED at once.
        let wants_persisted =
            self.node.persists() && receipts.iter().any(|(_, concern)| *concern == Some(WriteConcern::Persisted));
        let mut durable: Result<(), Arc<str>> = Ok(());
        if !routed.is_empty() {
            // Checked after the interest announcements above and sent with the ops, so a
            // connection that becomes interested later reads the batch from a snapshot instead.
            let writer_alone = maps.iter().all(|map| self.node.sole_interest(map, self.conn));
            let (applied, durability) =
                self.node.apply_batch_durable(routed, self.conn_ref(), wants_persisted, writer_alone).await;
            durable = durability;
            match routed_positions {
                None => outcomes.iter_mut().zip(applied).for_each(|(slot, outcome)| *slot = Some(outcome)),
                Some(positions) => positions
                    .into_iter()
                    .zip(applied)
                    .for_each(|(position, outcome)| outcomes[position] = Some(outcome)),
            }
        }
        // Replies were decided above but go out only now: after the fdatasync, so a client never
        // sees PERSISTED for a record a crash could still take back.
        let achieved = if wants_persisted && durable.is_ok() { WriteConcern::Persisted } else { APPLIED_LEVEL };

        // Conflict resolvers (`scripting`): a rejected write is told so with MERGE_REJECTED (and
        // still acknowledged below, so the client stops re-sending it); a merged one is sent
        // the record stored in its place, since a writer gets no event for its own write.
        for outcome in outcomes.iter().flatten() {
            match outcome {
                OpOutcome::MergeRejected(rejection) => {
                    let rejection = (**rejection).clone();
                    self.send(&ServerMessage::MergeRejected {
                        map_name: rejection.map_name.to_string(),
                        key: rejection.key.to_string(),
                        attempted_value: rejection.attempted_value,
                        reason: rejection.reason,
                        timestamp: rejection.timestamp,
                    });
                }
                OpOutcome::Merged(merged) => {
                    let body = crate::protocol::ServerEventBody::Lww(merged.record.clone());
                    let event = crate::protocol::ServerEvent {
                        map_name: merged.map_name.to_string(),
                        key: merged.key.to_string(),
                        body,
                    };
                    self.send(&ServerMessage::ServerEvent(event));
                }
                _ => {}
            }
        }
        let mut results = Vec::new();
        for ((op_id, concern), outcome) in receipts.into_iter().zip(outcomes) {
            let outcome = outcome.expect("every op has an outcome");
            let op_id_text = op_id.unwrap_or_else(|| CompactString::const_new("unknown"));
            match &outcome {
                OpOutcome::Rejected { reason, code } => {
                    self.send(&ServerMessage::OpRejected {
                        op_id: op_id_text.clone(),
                        reason: reason.clone(),
                        code: Some(*code),
                    });
                    if concern.is_some() {
                        results.push(OpResult {
                            op_id: op_id_text,
                            success: false,
                            achieved_level: APPLIED_LEVEL,
                            error: Some(reason.clone()),
                        });
                    }
                }
                OpOutcome::MergeRejected(rejection) => {
                    if concern.is_some() {
                        let error = Some(format!("rejected by a conflict resolver: {}", rejection.reason));
                        results.push(OpResult {
                            op_id: op_id_text,
                            success: false,
                            achieved_level: WriteConcern::Applied,
                            error,
                        });
                    }
                }
                OpOutcome::Applied | OpOutcome::Unchanged | OpOutcome::Merged(_) => match (&durable, concern) {
                    (Err(reason), Some(WriteConcern::Persisted)) => {
                        let error = format!("applied but not persisted: {reason}");
                        results.push(OpResult {
                            op_id: op_id_text,
                            success: false,
                            achieved_level: APPLIED_LEVEL,
                            error: Some(error),
                        });
                    }
                    (_, Some(_)) => results.push(OpResult {
                        op_id: op_id_text,
                        success: true,
                        achieved_level: achieved,
                        error: None,
                    }),
                    (_, None) => {}
                },
            }
        }
        self.send(&ServerMessage::OpAck { last_id, achieved_level: Some(achieved), results });
    }
}
