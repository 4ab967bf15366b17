//! The entry-processor family: `ENTRY_PROCESS` and `ENTRY_PROCESS_BATCH` (PROTOCOL §4.10,
//! DECISIONS §7.2). The processor is checked here, then run on the owner of each key
//! (`Node::process_entries`, `scripting`). Every request is answered: a refused processor or
//! key gets `success: false` with the reason, never silence (the client waits on `requestId`).
//! A processor may write, so the connection becomes interested in the map first
//! (DECISIONS §3.1), as for any write.

use std::sync::Arc;

use ahash::AHashSet;

use super::Session;
use crate::limits::{MAP_NAME_BYTES_MAX, PROCESS_BATCH_KEYS_MAX};
use crate::protocol::{ClientMessage, EntryProcessResult, EntryProcessor, ServerMessage};
use crate::scripting::{check_key, check_processor, failed, ProcessorCall};

/// Why a processor request is refused as a whole, if it is.
fn check_request(map_name: &str, processor: &EntryProcessor) -> Result<(), String> {
    if map_name.is_empty() || map_name.len() > MAP_NAME_BYTES_MAX {
        return Err(format!("map name must be 1 to {MAP_NAME_BYTES_MAX} bytes"));
    }
    check_processor(processor)
}

fn call_of(processor: EntryProcessor) -> Arc<ProcessorCall> {
    Arc::new(ProcessorCall { name: processor.name, code: processor.code, args: processor.args })
}

impl Session {
    pub(super) async fn on_processor(&mut self, message: ClientMessage) {
        match message {
            ClientMessage::EntryProcess { request_id, map_name, key, processor } => {
                if let Err(reason) = check_request(&map_name, &processor).and_then(|()| check_key(&key)) {
                    return self.send(&ServerMessage::EntryProcessResponse { request_id, result: failed(reason) });
                }
                let map: Arc<str> = Arc::from(map_name.as_str());
                self.add_interest(&map).await;
                let mut replies = self.node.process_entries(map, vec![key], call_of(processor), self.conn_ref()).await;
                let (_, result) = replies.pop().expect("one reply per key");
                self.send(&ServerMessage::EntryProcessResponse { request_id, result });
            }
            ClientMessage::EntryProcessBatch { request_id, map_name, keys, processor } => {
                let refusal = check_request(&map_name, &processor).err().or_else(|| {
                    (keys.len() > PROCESS_BATCH_KEYS_MAX)
                        .then(|| format!("batch exceeds maximum key count ({PROCESS_BATCH_KEYS_MAX})"))
                });
                // The reply is a map keyed by key, so a key listed twice is processed once.
                let mut seen = AHashSet::with_capacity(keys.len());
                let keys: Vec<String> = keys.into_iter().filter(|key| seen.insert(key.clone())).collect();
                if let Some(reason) = refusal {
                    let results = keys.into_iter().map(|key| (key, failed(reason.clone()))).collect();
                    return self.send(&ServerMessage::EntryProcessBatchResponse { request_id, results });
                }
                let mut results: Vec<(String, Option<EntryProcessResult>)> = Vec::with_capacity(keys.len());
                let mut runnable = Vec::with_capacity(keys.len());
                for key in keys {
                    match check_key(&key) {
                        Ok(()) => {
                            runnable.push(key.clone());
                            results.push((key, None));
                        }
                        Err(reason) => results.push((key, Some(failed(reason)))),
                    }
                }
                if !runnable.is_empty() {
                    let map: Arc<str> = Arc::from(map_name.as_str());
                    self.add_interest(&map).await;
                    let mut replies =
                        self.node.process_entries(map, runnable, call_of(processor), self.conn_ref()).await.into_iter();
                    for (_, slot) in results.iter_mut().filter(|(_, result)| result.is_none()) {
                        *slot = replies.next().map(|(_, reply)| reply);
                    }
                }
                let results =
                    results.into_iter().map(|(key, result)| (key, result.expect("every key has a result"))).collect();
                self.send(&ServerMessage::EntryProcessBatchResponse { request_id, results });
            }
            _ => unreachable!("registry routes only ENTRY_PROCESS and ENTRY_PROCESS_BATCH here"),
        }
    }
}
