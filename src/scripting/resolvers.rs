//! The conflict-resolver registry: per map, the resolvers clients registered, in the order they
//! are consulted. It decides nothing about conflicts itself (`scripting::Resolving` runs the
//! chain) and does no IO.
//!
//! Lives on every shard, since every owner consults its map's resolvers locally. One shard per
//! map, its *home* (the owner of the map name's partition), orders the changes: a
//! `REGISTER_RESOLVER`/`UNREGISTER_RESOLVER` is applied there first (`register`,
//! `unregister`), which numbers the map's new list with the next version; the connection's
//! shard then tells every shard to `install` it, and a shard keeps a list only if its version
//! is newer than the one it has. So two clients changing one map's resolvers at once leave every
//! shard with the same list, and a connection's later writes (which leave its shard after its
//! `install` tells, on the same FIFO queues) are resolved with its change in place.
//!
//! Ordering within a map, as the TopGun server does it: higher `priority` first (0–100, 50 when
//! absent); equal priorities in registration order; registering a name again replaces that
//! resolver and moves it behind the others of its priority.

use std::sync::Arc;

use ahash::AHashMap;

use crate::limits::{RESOLVERS_MAX, RESOLVERS_PER_MAP_MAX};
use crate::protocol::ResolverInfo;

/// `priority` when a registration gives none (the TopGun default).
pub const PRIORITY_DEFAULT: u64 = 50;

/// One registered resolver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolver {
    pub name: String,
    /// The body of `function(context)`.
    pub code: Arc<str>,
    /// As registered; `None` sorts as `PRIORITY_DEFAULT`.
    pub priority: Option<u64>,
    /// A glob over the key (`*` any run of characters, `?` one character); `None` matches all.
    pub key_pattern: Option<String>,
}

impl Resolver {
    pub fn priority_or_default(&self) -> u64 {
        self.priority.unwrap_or(PRIORITY_DEFAULT)
    }

    /// Whether this resolver is consulted for writes to `key`.
    pub fn applies_to(&self, key: &str) -> bool {
        self.key_pattern.as_deref().is_none_or(|pattern| glob_matches(pattern, key))
    }
}

/// One map's resolvers in consultation order, stamped by the map's home shard.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MapResolvers {
    /// Increases with every change on the home shard; a shard never replaces a list with an
    /// older one.
    pub version: u64,
    pub list: Arc<[Resolver]>,
}

/// What a client asks of a map's resolvers.
#[derive(Clone, Debug)]
pub enum ResolverChange {
    Register(Resolver),
    Unregister { name: String },
}

/// See the module doc. Lists emptied by unregistering stay (empty) so their version keeps
/// older lists out.
#[derive(Default)]
pub struct ResolverTable {
    maps: AHashMap<Arc<str>, MapResolvers>,
}

impl ResolverTable {
    /// The resolvers of `map`, if it has any.
    pub fn get(&self, map: &str) -> Option<&Arc<[Resolver]>> {
        self.maps.get(map).map(|resolvers| &resolvers.list).filter(|list| !list.is_empty())
    }

    /// On the map's home shard: applies `change` to this shard's list and returns the new list
    /// to install everywhere, or why the change is refused.
    pub fn change(&mut self, map: &Arc<str>, change: ResolverChange) -> Result<MapResolvers, String> {
        let current = self.maps.get(&**map).cloned().unwrap_or_default();
        let mut list: Vec<Resolver> = current.list.to_vec();
        match change {
            ResolverChange::Register(resolver) => {
                list.retain(|existing| existing.name != resolver.name);
                if list.len() >= RESOLVERS_PER_MAP_MAX {
                    return Err(format!("map {map:?} already has {RESOLVERS_PER_MAP_MAX} resolvers"));
                }
                let total = self.count() - current.list.len() + list.len();
                if total >= RESOLVERS_MAX {
                    return Err(format!("the server already has {RESOLVERS_MAX} resolvers"));
                }
                list.push(resolver);
                // Stable: equal priorities keep registration order.
                list.sort_by_key(|resolver| std::cmp::Reverse(resolver.priority_or_default()));
            }
            ResolverChange::Unregister { name } => {
                let before = list.len();
                list.retain(|existing| existing.name != name);
                if list.len() == before {
                    return Err(format!("no resolver named {name:?} on map {map:?}"));
                }
            }
        }
        let resolvers = MapResolvers { version: current.version + 1, list: list.into() };
        self.maps.insert(Arc::clone(map), resolvers.clone());
        Ok(resolvers)
    }

    /// On every shard: keeps `resolvers` as `map`'s list unless this shard already has a
    /// newer one (or this one, on the home shard).
    pub fn install(&mut self, map: Arc<str>, resolvers: MapResolvers) {
        let newer = self.maps.get(&*map).is_none_or(|current| resolvers.version > current.version);
        if newer {
            self.maps.insert(map, resolvers);
        }
    }

    /// The registered resolvers, of `map` or of every map, for `LIST_RESOLVERS`: ordered by
    /// map name, then consultation order.
    pub fn list(&self, map: Option<&str>) -> Vec<ResolverInfo> {
        let mut maps: Vec<(&Arc<str>, &MapResolvers)> =
            self.maps.iter().filter(|(name, _)| map.is_none_or(|wanted| &***name == wanted)).collect();
        maps.sort_by(|a, b| a.0.cmp(b.0));
        maps.into_iter()
            .flat_map(|(name, resolvers)| {
                resolvers.list.iter().map(move |resolver| ResolverInfo {
                    map_name: name.to_string(),
                    name: resolver.name.clone(),
                    priority: resolver.priority,
                    key_pattern: resolver.key_pattern.clone(),
                })
            })
            .collect()
    }

    /// Resolvers over all maps.
    pub fn count(&self) -> usize {
        self.maps.values().map(|resolvers| resolvers.list.len()).sum()
    }
}

/// Whether `text` matches the glob `pattern`: `*` matches any run of characters (none
/// included), `?` exactly one, every other character itself. Linear in practice: on a mismatch
/// it retries only from the last `*`.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut at_pattern, mut at_text) = (0, 0);
    // The position after the last `*` seen, and the text position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while at_text < text.len() {
        match pattern.get(at_pattern) {
            Some('*') => {
                star = Some((at_pattern + 1, at_text));
                at_pattern += 1;
            }
            Some(&wanted) if wanted == '?' || wanted == text[at_text] => {
                at_pattern += 1;
                at_text += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character and try again from there.
                Some((after_star, tried_at)) => {
                    star = Some((after_star, tried_at + 1));
                    at_pattern = after_star;
                    at_text = tried_at + 1;
                }
                None => return false,
            },
        }
    }
    pattern[at_pattern..].iter().all(|&rest| rest == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(name: &str, priority: Option<u64>) -> Resolver {
        Resolver { name: name.into(), code: Arc::from("return {action: 'accept'};"), priority, key_pattern: None }
    }

    fn names(list: &[Resolver]) -> Vec<&str> {
        list.iter().map(|resolver| resolver.name.as_str()).collect()
    }

    // Goal: the glob matches as the TopGun server's does (`*`, `?`, everything else literal).
    // Method: a table of patterns and keys.
    #[test]
    fn glob_matches_like_topgun() {
        let cases = [
            ("*", "", true),
            ("*", "anything", true),
            ("user:*", "user:42", true),
            ("user:*", "users:42", false),
            ("*:draft", "doc:1:draft", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a*b*c", "a-b-b-c", true),
            ("a*b*c", "a-b-b-d", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("[x].+", "[x].+", true),
            ("é?", "éü", true),
            ("", "", true),
            ("", "x", false),
        ];
        for (pattern, key, expected) in cases {
            assert_eq!(glob_matches(pattern, key), expected, "{pattern:?} against {key:?}");
        }
    }

    // Goal: resolvers are ordered by priority (default 50), ties in registration order, and a
    // re-registration replaces by name. Method: register, re-register and unregister on one map.
    #[test]
    fn registration_orders_and_replaces() {
        let mut table = ResolverTable::default();
        let map: Arc<str> = Arc::from("orders");
        table.change(&map, ResolverChange::Register(resolver("low", Some(10)))).unwrap();
        table.change(&map, ResolverChange::Register(resolver("default", None))).unwrap();
        table.change(&map, ResolverChange::Register(resolver("high", Some(90)))).unwrap();
        table.change(&map, ResolverChange::Register(resolver("also-default", Some(50)))).unwrap();
        assert_eq!(names(table.get("orders").unwrap()), ["high", "default", "also-default", "low"]);
        let again = table.change(&map, ResolverChange::Register(resolver("default", Some(50)))).unwrap();
        assert_eq!(names(&again.list), ["high", "also-default", "default", "low"]);
        assert_eq!(again.version, 5);
        let after = table.change(&map, ResolverChange::Unregister { name: "high".into() }).unwrap();
        assert_eq!(names(&after.list), ["also-default", "default", "low"]);
        let missing = table.change(&map, ResolverChange::Unregister { name: "high".into() });
        assert_eq!(missing, Err("no resolver named \"high\" on map \"orders\"".into()));
        let listed = table.list(Some("orders"));
        assert_eq!(
            listed.iter().map(|info| (info.name.as_str(), info.priority)).collect::<Vec<_>>(),
            [("also-default", Some(50)), ("default", Some(50)), ("low", Some(10))]
        );
        assert!(table.list(Some("other")).is_empty());
    }

    // Goal: every shard ends with the newest list whatever order installs arrive in, and an
    // emptied list keeps an older one from coming back. Method: install versions out of order.
    #[test]
    fn install_keeps_the_newest_list() {
        let mut home = ResolverTable::default();
        let map: Arc<str> = Arc::from("m");
        let first = home.change(&map, ResolverChange::Register(resolver("a", None))).unwrap();
        let second = home.change(&map, ResolverChange::Register(resolver("b", None))).unwrap();
        home.change(&map, ResolverChange::Unregister { name: "a".into() }).unwrap();
        let emptied = home.change(&map, ResolverChange::Unregister { name: "b".into() }).unwrap();
        let mut shard = ResolverTable::default();
        shard.install(Arc::clone(&map), second.clone());
        shard.install(Arc::clone(&map), first);
        assert_eq!(names(shard.get("m").unwrap()), ["a", "b"]);
        shard.install(Arc::clone(&map), emptied);
        assert!(shard.get("m").is_none());
        shard.install(Arc::clone(&map), second);
        assert!(shard.get("m").is_none(), "an older list never replaces a newer one");
    }

    // Goal: the per-map cap holds. Method: register one past it.
    #[test]
    fn per_map_cap_is_enforced() {
        let mut table = ResolverTable::default();
        let map: Arc<str> = Arc::from("m");
        for index in 0..RESOLVERS_PER_MAP_MAX {
            table.change(&map, ResolverChange::Register(resolver(&format!("r{index}"), None))).unwrap();
        }
        let refused = table.change(&map, ResolverChange::Register(resolver("one-more", None)));
        assert_eq!(refused, Err(format!("map \"m\" already has {RESOLVERS_PER_MAP_MAX} resolvers")));
        // Replacing an existing name is still allowed at the cap.
        assert!(table.change(&map, ResolverChange::Register(resolver("r0", Some(1)))).is_ok());
    }
}
