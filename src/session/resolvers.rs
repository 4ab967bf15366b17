//! The conflict-resolver family: `REGISTER_RESOLVER`, `UNREGISTER_RESOLVER` and
//! `LIST_RESOLVERS` (PROTOCOL §4.10). A registration is checked here (sizes, priority, and that
//! the code compiles), then ordered on the map's home shard and installed on every shard
//! (`Node::change_resolvers`, `scripting::resolvers`). Every request is answered with its
//! `requestId`; a refusal is `success: false` with the reason. What resolvers do to writes is
//! described in `scripting`.

use std::sync::Arc;

use super::Session;
use crate::limits::MAP_NAME_BYTES_MAX;
use crate::protocol::{ClientMessage, ServerMessage};
use crate::scripting::check_resolver;
use crate::scripting::resolvers::ResolverChange;

fn check_map_name(map_name: &str) -> Result<(), String> {
    if map_name.is_empty() || map_name.len() > MAP_NAME_BYTES_MAX {
        return Err(format!("map name must be 1 to {MAP_NAME_BYTES_MAX} bytes"));
    }
    Ok(())
}

impl Session {
    pub(super) async fn on_resolver(&mut self, message: ClientMessage) {
        match message {
            ClientMessage::RegisterResolver { request_id, map_name, resolver } => {
                let checked = check_map_name(&map_name).and_then(|()| check_resolver(resolver));
                let checked = checked.and_then(|resolver| match self.node.check_resolver_code(&resolver.code) {
                    Ok(()) => Ok(resolver),
                    Err(reason) => Err(format!("resolver {:?} {reason}", resolver.name)),
                });
                let outcome = match checked {
                    Ok(resolver) => {
                        self.node
                            .change_resolvers(Arc::from(map_name.as_str()), ResolverChange::Register(resolver))
                            .await
                    }
                    Err(reason) => Err(reason),
                };
                let (success, error) = split(outcome);
                self.send(&ServerMessage::RegisterResolverResponse { request_id, success, error });
            }
            ClientMessage::UnregisterResolver { request_id, map_name, resolver_name } => {
                let outcome = match check_map_name(&map_name) {
                    Ok(()) => {
                        self.node
                            .change_resolvers(
                                Arc::from(map_name.as_str()),
                                ResolverChange::Unregister { name: resolver_name },
                            )
                            .await
                    }
                    Err(reason) => Err(reason),
                };
                let (success, error) = split(outcome);
                self.send(&ServerMessage::UnregisterResolverResponse { request_id, success, error });
            }
            ClientMessage::ListResolvers { request_id, map_name } => {
                let resolvers = self.node.list_resolvers(map_name.as_deref());
                self.send(&ServerMessage::ListResolversResponse { request_id, resolvers });
            }
            _ => unreachable!("registry routes only the resolver messages here"),
        }
    }
}

fn split(outcome: Result<(), String>) -> (bool, Option<String>) {
    match outcome {
        Ok(()) => (true, None),
        Err(reason) => (false, Some(reason)),
    }
}
