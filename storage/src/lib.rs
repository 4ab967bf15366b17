//! shardgrid-storage
