//! Core sets: which CPUs the server runs on, from `--cores 0-3,6` or `--core-mask 0x4f`.
//! Validation happens here, once, against the CPUs this process may run on; the rest of the
//! server only ever sees a valid, sorted, duplicate-free `CoreSet`.

use crate::ShardId;

/// The highest CPU number accepted in a core list or mask (the kernel's default CPU_SETSIZE).
pub const CPU_NUMBER_MAX: usize = 1023;

/// A non-empty, ascending, duplicate-free list of CPU numbers; shard `i` runs on `cpus[i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreSet {
    cpus: Vec<usize>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CoreSetError {
    #[error("the core list is empty")]
    Empty,
    #[error("cannot parse core list item {item:?}: expected a CPU number or a range like 0-3")]
    BadItem { item: String },
    #[error("core range {item:?} runs backwards")]
    BackwardsRange { item: String },
    #[error("core {cpu} is named more than once")]
    Duplicate { cpu: usize },
    #[error("core {cpu} is out of range (the highest CPU number accepted is {CPU_NUMBER_MAX})")]
    OutOfRange { cpu: usize },
    #[error("core {cpu} is offline or not available to this process (available: {available})")]
    Offline { cpu: usize, available: String },
    #[error("cannot parse core mask {mask:?}: expected hexadecimal like 0x4f")]
    BadMask { mask: String },
}

impl CoreSet {
    /// Parses a list like `0-3,6` and checks every CPU against `available`.
    pub fn parse_list(spec: &str, available: &[usize]) -> Result<CoreSet, CoreSetError> {
        let mut cpus = Vec::new();
        for item in spec.split(',').map(str::trim) {
            if item.is_empty() {
                if spec.trim().is_empty() {
                    return Err(CoreSetError::Empty);
                }
                return Err(CoreSetError::BadItem { item: item.to_string() });
            }
            let parse_cpu = |text: &str| -> Result<usize, CoreSetError> {
                let cpu: usize = text.trim().parse().map_err(|_| CoreSetError::BadItem { item: item.to_string() })?;
                if cpu > CPU_NUMBER_MAX {
                    return Err(CoreSetError::OutOfRange { cpu });
                }
                Ok(cpu)
            };
            match item.split_once('-') {
                Some((first, last)) => {
                    let (first, last) = (parse_cpu(first)?, parse_cpu(last)?);
                    if first > last {
                        return Err(CoreSetError::BackwardsRange { item: item.to_string() });
                    }
                    cpus.extend(first..=last);
                }
                None => cpus.push(parse_cpu(item)?),
            }
        }
        Self::from_cpus(cpus, available)
    }

    /// Parses a hexadecimal mask like `0x4f` (bit `n` = CPU `n`).
    pub fn parse_mask(mask: &str, available: &[usize]) -> Result<CoreSet, CoreSetError> {
        let digits = mask.trim().trim_start_matches("0x").trim_start_matches("0X");
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(CoreSetError::BadMask { mask: mask.to_string() });
        }
        let mut cpus = Vec::new();
        // Walk the digits from the least significant end so masks wider than 128 bits work.
        for (position, digit) in digits.chars().rev().enumerate() {
            let nibble = digit.to_digit(16).expect("checked hex digit above");
            for bit in 0..4 {
                if nibble & (1 << bit) != 0 {
                    let cpu = position * 4 + bit;
                    if cpu > CPU_NUMBER_MAX {
                        return Err(CoreSetError::OutOfRange { cpu });
                    }
                    cpus.push(cpu);
                }
            }
        }
        Self::from_cpus(cpus, available)
    }

    fn from_cpus(mut cpus: Vec<usize>, available: &[usize]) -> Result<CoreSet, CoreSetError> {
        if cpus.is_empty() {
            return Err(CoreSetError::Empty);
        }
        cpus.sort_unstable();
        if let Some(pair) = cpus.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(CoreSetError::Duplicate { cpu: pair[0] });
        }
        if let Some(&cpu) = cpus.iter().find(|cpu| !available.contains(cpu)) {
            let available = available.iter().map(|cpu| cpu.to_string()).collect::<Vec<_>>().join(",");
            return Err(CoreSetError::Offline { cpu, available });
        }
        Ok(CoreSet { cpus })
    }

    /// All CPUs this process may run on, in ascending order.
    pub fn all_available() -> CoreSet {
        CoreSet { cpus: available_cpus() }
    }

    pub fn shard_count(&self) -> usize {
        self.cpus.len()
    }

    pub fn cpu_of(&self, shard: ShardId) -> usize {
        self.cpus[shard.index()]
    }

    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }
}

/// The CPUs in this process's affinity mask: online and permitted (cgroups, taskset).
pub fn available_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: we pass a valid pointer to a cpu_set_t and its exact size.
    let result = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if result != 0 {
        let count = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        return (0..count).collect();
    }
    (0..=CPU_NUMBER_MAX)
        // SAFETY: `cpu` is below CPU_SETSIZE (1024), the bound CPU_ISSET requires.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOUR: &[usize] = &[0, 1, 2, 3];

    // Lists and ranges parse to sorted CPUs; the error cases each name what is wrong.
    #[test]
    fn parses_lists_and_ranges() {
        assert_eq!(CoreSet::parse_list("0-2", FOUR).unwrap().cpus(), &[0, 1, 2]);
        assert_eq!(CoreSet::parse_list("3,0-1", FOUR).unwrap().cpus(), &[0, 1, 3]);
        assert_eq!(CoreSet::parse_list(" 2 ", FOUR).unwrap().cpus(), &[2]);
        assert_eq!(CoreSet::parse_list("", FOUR), Err(CoreSetError::Empty));
        assert_eq!(CoreSet::parse_list("0,0", FOUR), Err(CoreSetError::Duplicate { cpu: 0 }));
        assert_eq!(CoreSet::parse_list("0-2,1", FOUR), Err(CoreSetError::Duplicate { cpu: 1 }));
        assert!(matches!(CoreSet::parse_list("4", FOUR), Err(CoreSetError::Offline { cpu: 4, .. })));
        assert!(matches!(CoreSet::parse_list("3-1", FOUR), Err(CoreSetError::BackwardsRange { .. })));
        assert!(matches!(CoreSet::parse_list("a", FOUR), Err(CoreSetError::BadItem { .. })));
        assert!(matches!(CoreSet::parse_list("0,", FOUR), Err(CoreSetError::BadItem { .. })));
        assert_eq!(CoreSet::parse_list("5000", FOUR), Err(CoreSetError::OutOfRange { cpu: 5000 }));
    }

    // Masks set bit n for CPU n; an empty mask or a non-hex mask is an error.
    #[test]
    fn parses_masks() {
        let many: Vec<usize> = (0..8).collect();
        assert_eq!(CoreSet::parse_mask("0x4f", &many).unwrap().cpus(), &[0, 1, 2, 3, 6]);
        assert_eq!(CoreSet::parse_mask("3", &many).unwrap().cpus(), &[0, 1]);
        assert_eq!(CoreSet::parse_mask("0x0", &many), Err(CoreSetError::Empty));
        assert!(matches!(CoreSet::parse_mask("0xzz", &many), Err(CoreSetError::BadMask { .. })));
        assert!(matches!(CoreSet::parse_mask("0x100", &many), Err(CoreSetError::Offline { cpu: 8, .. })));
    }

    #[test]
    fn available_cpus_is_not_empty() {
        assert!(!available_cpus().is_empty());
    }
}
