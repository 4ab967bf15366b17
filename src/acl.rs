//! shardgrid::acl: who may touch what. Permissions are granted to JWT roles on map, topic, lock
//! and counter names matched by glob patterns, loaded once from a TOML file (`--acl FILE`) and
//! checked on the connection's shard before any hop. Without a file, every authenticated
//! connection may do everything. Reserved map names (`_topgun_*`, `__topgun_*`) are refused to
//! clients whatever the file says (PROTOCOL §7).
//!
//! File format:
//!
//! ```toml
//! # Each rule grants `allow` on the named resources to connections holding one of `roles`
//! # ("*" = any connection, authenticated or anonymous in --no-auth mode). Rules only grant;
//! # what no rule grants is denied.
//! [[rule]]
//! roles = ["USER"]
//! maps = ["todos", "public.*"]
//! allow = ["read", "write", "remove", "subscribe"]
//!
//! [[rule]]
//! roles = ["ADMIN"]
//! maps = ["*"]
//! topics = ["*"]
//! locks = ["*"]
//! counters = ["*"]
//! allow = ["read", "write", "remove", "subscribe", "publish", "lock", "admin"]
//! ```

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;

use crate::auth::Principal;

/// What an operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Read,
    Write,
    Remove,
    Subscribe,
    Publish,
    Lock,
    Admin,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Remove => "remove",
            Permission::Subscribe => "subscribe",
            Permission::Publish => "publish",
            Permission::Lock => "lock",
            Permission::Admin => "admin",
        }
    }
}

/// The kind of named resource an operation touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Map,
    Topic,
    Lock,
    Counter,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Map => "map",
            Resource::Topic => "topic",
            Resource::Lock => "lock",
            Resource::Counter => "counter",
        }
    }
}

/// One access an operation needs: `permission` on the resource `kind` named `name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access<'a> {
    pub kind: Resource,
    pub name: &'a str,
    pub permission: Permission,
}

/// Why an access was refused; the text goes into `ERROR {code: 403}`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("access denied: map name {0:?} is reserved")]
    Reserved(String),
    #[error("access denied: {permission} on {kind} {name:?}")]
    NotGranted { permission: &'static str, kind: &'static str, name: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    roles: Vec<String>,
    #[serde(default)]
    maps: Vec<String>,
    #[serde(default)]
    topics: Vec<String>,
    #[serde(default)]
    locks: Vec<String>,
    #[serde(default)]
    counters: Vec<String>,
    allow: Vec<Permission>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AclFile {
    #[serde(default)]
    rule: Vec<RuleFile>,
}

struct Rule {
    roles: Vec<String>,
    maps: GlobSet,
    topics: GlobSet,
    locks: GlobSet,
    counters: GlobSet,
    allow: Vec<Permission>,
}

/// A loaded ACL file. Built once at start-up; shards share it read-only behind an `Arc`.
pub struct Acl {
    rules: Vec<Rule>,
}

impl std::fmt::Debug for Acl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Acl({} rules)", self.rules.len())
    }
}

/// The access policy in force: everything for authenticated connections, or a file's rules.
#[derive(Debug)]
pub enum Policy {
    AllowAll,
    Rules(Acl),
}

#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("cannot read ACL file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("ACL file {path} is not valid: {message}")]
    Invalid { path: String, message: String },
}

fn glob_set(patterns: &[String], path: &str) -> Result<GlobSet, AclError> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = Glob::new(pattern)
            .map_err(|error| AclError::Invalid { path: path.to_string(), message: error.to_string() })?;
        builder.add(glob);
    }
    builder.build().map_err(|error| AclError::Invalid { path: path.to_string(), message: error.to_string() })
}

/// Map names clients may never use (PROTOCOL §7).
pub fn is_reserved_map(name: &str) -> bool {
    name.starts_with("_topgun_") || name.starts_with("__topgun_")
}

impl Acl {
    pub fn parse(text: &str, path: &str) -> Result<Acl, AclError> {
        let file: AclFile = toml::from_str(text)
            .map_err(|error| AclError::Invalid { path: path.to_string(), message: error.to_string() })?;
        let rules = file
            .rule
            .into_iter()
            .map(|rule| {
                Ok(Rule {
                    maps: glob_set(&rule.maps, path)?,
                    topics: glob_set(&rule.topics, path)?,
                    locks: glob_set(&rule.locks, path)?,
                    counters: glob_set(&rule.counters, path)?,
                    roles: rule.roles,
                    allow: rule.allow,
                })
            })
            .collect::<Result<Vec<_>, AclError>>()?;
        Ok(Acl { rules })
    }

    pub fn load(path: &std::path::Path) -> Result<Acl, AclError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AclError::Read { path: shown.clone(), source })?;
        Acl::parse(&text, &shown)
    }

    fn grants(&self, principal: &Principal, access: &Access<'_>) -> bool {
        self.rules.iter().any(|rule| {
            let role_matches =
                rule.roles.iter().any(|role| role == "*" || principal.roles.iter().any(|held| held == role));
            let names = match access.kind {
                Resource::Map => &rule.maps,
                Resource::Topic => &rule.topics,
                Resource::Lock => &rule.locks,
                Resource::Counter => &rule.counters,
            };
            role_matches && rule.allow.contains(&access.permission) && names.is_match(access.name)
        })
    }
}

impl Policy {
    /// Checks one access. Reserved map names are refused under every policy.
    pub fn check(&self, principal: &Principal, access: &Access<'_>) -> Result<(), Denied> {
        if access.kind == Resource::Map && is_reserved_map(access.name) {
            return Err(Denied::Reserved(access.name.to_string()));
        }
        match self {
            Policy::AllowAll => Ok(()),
            Policy::Rules(acl) if acl.grants(principal, access) => Ok(()),
            Policy::Rules(_) => Err(Denied::NotGranted {
                permission: access.permission.as_str(),
                kind: access.kind.as_str(),
                name: access.name.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        [[rule]]
        roles = ["USER"]
        maps = ["todos", "public.*"]
        allow = ["read", "subscribe", "write"]

        [[rule]]
        roles = ["*"]
        topics = ["news/*"]
        allow = ["subscribe"]

        [[rule]]
        roles = ["ADMIN"]
        maps = ["*"]
        locks = ["*"]
        allow = ["read", "write", "remove", "lock", "admin"]
    "#;

    fn principal(roles: &[&str]) -> Principal {
        Principal { user_id: Some("u".into()), roles: roles.iter().map(|role| role.to_string()).collect() }
    }

    fn map(name: &str, permission: Permission) -> Access<'_> {
        Access { kind: Resource::Map, name, permission }
    }

    // Goal: rules grant by role, resource kind, glob and permission, and nothing else.
    #[test]
    fn rules_grant_exactly() {
        let policy = Policy::Rules(Acl::parse(FILE, "test.toml").unwrap());
        let user = principal(&["USER"]);
        assert!(policy.check(&user, &map("todos", Permission::Write)).is_ok());
        assert!(policy.check(&user, &map("public.feed", Permission::Read)).is_ok());
        assert!(policy.check(&user, &map("todos", Permission::Remove)).is_err());
        assert!(policy.check(&user, &map("private", Permission::Read)).is_err());
        let topic = Access { kind: Resource::Topic, name: "news/eu", permission: Permission::Subscribe };
        assert!(policy.check(&principal(&[]), &topic).is_ok(), "'*' matches any connection");
        let publish = Access { kind: Resource::Topic, name: "news/eu", permission: Permission::Publish };
        assert!(policy.check(&user, &publish).is_err());
        let admin = principal(&["ADMIN"]);
        assert!(policy.check(&admin, &map("anything", Permission::Remove)).is_ok());
        assert!(policy
            .check(&admin, &Access { kind: Resource::Counter, name: "c", permission: Permission::Write })
            .is_err());
    }

    // Reserved names are refused under every policy, the default included.
    #[test]
    fn reserved_names_are_refused() {
        let admin = principal(&["ADMIN"]);
        for policy in [Policy::AllowAll, Policy::Rules(Acl::parse(FILE, "t").unwrap())] {
            assert_eq!(
                policy.check(&admin, &map("_topgun_x", Permission::Read)),
                Err(Denied::Reserved("_topgun_x".into()))
            );
            assert!(policy.check(&admin, &map("__topgun_meta", Permission::Write)).is_err());
        }
        assert!(Policy::AllowAll.check(&admin, &map("topgun", Permission::Write)).is_ok());
    }

    // A file with unknown keys, unknown permissions or bad globs is refused with its path.
    #[test]
    fn bad_files_are_refused() {
        assert!(matches!(Acl::parse("[[rule]]\nroles=[\"A\"]\nallow=[\"fly\"]", "f"), Err(AclError::Invalid { .. })));
        assert!(matches!(
            Acl::parse("[[rule]]\nroles=[\"A\"]\nallow=[]\ncolour=1", "f"),
            Err(AclError::Invalid { .. })
        ));
        assert!(matches!(
            Acl::parse("[[rule]]\nroles=[\"A\"]\nmaps=[\"a[\"]\nallow=[]", "f"),
            Err(AclError::Invalid { .. })
        ));
    }
}
