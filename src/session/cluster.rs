//! The cluster family: `PARTITION_MAP_REQUEST` -> `PARTITION_MAP` (PROTOCOL §4.12, DECISIONS
//! §4.2). One node, ACTIVE, owning all 271 partitions; always answered, whatever
//! `currentVersion` the client holds. The shards are this node's business, not the client's:
//! they never appear in the map.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::Session;
use crate::hash::PARTITION_COUNT;
use crate::node::wall_ms;
use crate::protocol::{ClientMessage, NodeStatus, PartitionInfo, PartitionMap, PartitionNode, ServerMessage};

/// The map's version: one node that never changes its table.
const PARTITION_MAP_VERSION: u64 = 1;

impl Session {
    pub(super) fn on_cluster(&mut self, message: ClientMessage) {
        let ClientMessage::PartitionMapRequest { .. } = message else {
            unreachable!("registry routes only PARTITION_MAP_REQUEST here")
        };
        let node_id = self.node.config.node_id.clone();
        let address = self.advertised_address();
        let map = PartitionMap {
            version: PARTITION_MAP_VERSION,
            partition_count: u32::from(PARTITION_COUNT),
            nodes: vec![PartitionNode {
                node_id: node_id.clone(),
                websocket: format!("ws://{address}/ws"),
                http: Some(format!("http://{address}")),
                status: NodeStatus::Active,
            }],
            partitions: (0..u32::from(PARTITION_COUNT))
                .map(|partition_id| PartitionInfo {
                    partition_id,
                    owner_node_id: node_id.clone(),
                    backup_node_ids: Vec::new(),
                })
                .collect(),
            generated_at: wall_ms(),
        };
        self.send(&ServerMessage::PartitionMap(map));
    }

    /// The address clients should use: `--host` when it names one, else the address this
    /// client reached (a wildcard listen address is not one a client can connect to).
    fn advertised_address(&self) -> SocketAddr {
        let config = &self.node.config;
        let local = self.coord.local_addr;
        let ip = if config.host.is_unspecified() {
            local.map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |address| address.ip())
        } else {
            config.host
        };
        SocketAddr::new(ip, local.map_or(config.port, |address| address.port()))
    }
}
