//! The maps userspace writes: configuration and the endpoint rules,
//! updated in an order that never leaves a kept rule unmatched.

use std::collections::{BTreeSet, HashSet};

use agent_common::{
    Config, EndpointKey, PortEntry, WORKLOAD_ENDPOINT_ENTRIES, WorkloadKey, config_flags, map_names,
};
use aya::maps::{
    Array, HashMap as BpfHashMap, MapData, MapError,
    lpm_trie::{Key, LpmTrie},
};

use super::{CaptureError, Compiled, WorkloadEntries, map_err};

/// The maps userspace writes.
pub(super) struct Control {
    pub(super) config: Array<MapData, Config>,
    pub(super) endpoints: LpmTrie<MapData, EndpointKey, u32>,
    pub(super) endpoints_any: LpmTrie<MapData, [u8; 16], u32>,
    pub(super) ports: Array<MapData, PortEntry>,
    pub(super) current: Compiled,
    pub(super) cfg: Config,
    /// Entries a previous `apply` failed to remove from `RW_ENDPOINTS` /
    /// `RW_ENDPOINTS_ANY`: still in the kernel, retried by every `apply`
    /// until they are gone (or wanted again).
    pub(super) stale: Stale,
    pub(super) workloads: Workloads,
}

/// The two operations the sync makes on `RW_WL_ENDPOINTS` (a trait so the
/// diff and the full-map accounting are tested without a kernel).
pub(super) trait WorkloadMap {
    fn insert(&mut self, key: WorkloadKey, id: u32) -> Result<(), MapError>;
    fn remove(&mut self, key: &WorkloadKey) -> Result<(), MapError>;
}

impl WorkloadMap for BpfHashMap<MapData, WorkloadKey, u32> {
    fn insert(&mut self, key: WorkloadKey, id: u32) -> Result<(), MapError> {
        BpfHashMap::insert(self, key, id, 0)
    }

    fn remove(&mut self, key: &WorkloadKey) -> Result<(), MapError> {
        BpfHashMap::remove(self, key)
    }
}

/// `RW_WL_ENDPOINTS` and what userspace knows of its content.
pub(super) struct Workloads<M = BpfHashMap<MapData, WorkloadKey, u32>> {
    pub(super) map: M,
    /// What the kernel map holds (as far as the syscalls said).
    pub(super) current: WorkloadEntries,
    /// Wanted entries that did not fit, each counted once in `full`
    /// (retried at every sync, so they go in once room frees up).
    pub(super) rejected: BTreeSet<WorkloadKey>,
    /// Entries that could not be inserted because the map was full.
    pub(super) full: u64,
}

fn is_errno(e: &MapError, errno: i32) -> bool {
    matches!(e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(errno))
}

impl<M: WorkloadMap> Workloads<M> {
    /// Makes the map hold `next`: stale entries (cgroups gone, selectors
    /// changed) out first, so their room serves the new ones; then the new
    /// and changed ones. A full map is counted per entry, once, not an error.
    pub(super) fn apply(&mut self, next: WorkloadEntries) -> Result<(), CaptureError> {
        let name = map_names::WORKLOAD_ENDPOINTS;
        let gone: Vec<WorkloadKey> = self
            .current
            .keys()
            .filter(|k| !next.contains_key(k))
            .copied()
            .collect();
        for k in gone {
            match self.map.remove(&k) {
                Err(e) if !is_errno(&e, libc::ENOENT) => {
                    // Still in the kernel: kept as current, retried next time.
                    tracing::warn!(error = %e, map = name, "removing a stale workload endpoint entry failed; retried at the next sync");
                }
                _ => {
                    self.current.remove(&k);
                }
            }
        }
        let capacity = WORKLOAD_ENDPOINT_ENTRIES as usize;
        for (&k, &id) in &next {
            if self.current.get(&k) == Some(&id) {
                continue;
            }
            // The kernel says E2BIG when full; knowing the count, ask only
            // when there is room.
            let room = self.current.len() < capacity || self.current.contains_key(&k);
            let fits = if room {
                match self.map.insert(k, id) {
                    Ok(()) => true,
                    Err(e) if is_errno(&e, libc::E2BIG) || is_errno(&e, libc::ENOMEM) => false,
                    Err(e) => return Err(super::map_err(name)(e)),
                }
            } else {
                false
            };
            if fits {
                self.current.insert(k, id);
                self.rejected.remove(&k);
            } else if self.rejected.insert(k) {
                self.full += 1;
                tracing::warn!(
                    cgroup_id = k.cgroup_id,
                    port = k.port,
                    capacity,
                    "the kernel's workload endpoint map is full; this socket's traffic is not watched until room frees up (counted in rampwatch_events_lost_total{{reason=\"workload_map_full\"}})"
                );
            }
        }
        self.rejected.retain(|k| next.contains_key(k));
        Ok(())
    }

    /// Distinct cgroup ids in the kernel map.
    pub(super) fn cgroups(&self) -> usize {
        let mut n = 0;
        let mut last = None;
        // Sorted by cgroup id first: equal ids are adjacent.
        for k in self.current.keys() {
            if last != Some(k.cgroup_id) {
                n += 1;
                last = Some(k.cgroup_id);
            }
        }
        n
    }
}

/// LPM entries whose removal failed.
#[derive(Default)]
pub(super) struct Stale {
    pub(super) port_entries: HashSet<(u32, EndpointKey)>,
    pub(super) any_port_entries: HashSet<(u32, [u8; 16])>,
}

/// Removes one LPM entry; `Ok` also when it is already gone.
fn remove_lpm<K: aya::Pod>(
    trie: &mut LpmTrie<MapData, K, u32>,
    bits: u32,
    key: K,
) -> Result<(), MapError> {
    match trie.remove(&Key::new(bits, key)) {
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

impl Control {
    pub(super) fn write_config(&mut self) -> Result<(), CaptureError> {
        self.config
            .set(0, self.cfg, 0)
            .map_err(map_err(map_names::CONFIG))
    }

    /// Installs `next`: new and changed entries first, then the config flag,
    /// then removals, so no packet sees a gap for a rule that stays.
    pub(super) fn apply(&mut self, next: Compiled) -> Result<(), CaptureError> {
        for (&(bits, key), &id) in &next.port_entries {
            if self.current.port_entries.get(&(bits, key)) != Some(&id) {
                self.endpoints
                    .insert(&Key::new(bits, key), id, 0)
                    .map_err(map_err(map_names::ENDPOINTS))?;
            }
        }
        for (&(bits, addr), &id) in &next.any_port_entries {
            if self.current.any_port_entries.get(&(bits, addr)) != Some(&id) {
                self.endpoints_any
                    .insert(&Key::new(bits, addr), id, 0)
                    .map_err(map_err(map_names::ENDPOINTS_ANY_PORT))?;
            }
        }
        for (&port, &entry) in &next.ports {
            if self.current.ports.get(&port) != Some(&entry) {
                self.ports
                    .set(u32::from(port), entry, 0)
                    .map_err(map_err(map_names::PORTS))?;
            }
        }
        self.cfg.flags = if next.any_port {
            config_flags::NO_PORT_PREFILTER
        } else {
            0
        };
        self.write_config()?;
        for &port in self.current.ports.keys() {
            if !next.ports.contains_key(&port) {
                self.ports
                    .set(u32::from(port), PortEntry::default(), 0)
                    .map_err(map_err(map_names::PORTS))?;
            }
        }
        // Removals last. One that fails leaves a stale rule in the kernel:
        // remembered and retried by the next apply, never forgotten.
        let mut stale = std::mem::take(&mut self.stale);
        stale
            .port_entries
            .extend(self.current.port_entries.keys().copied());
        stale
            .any_port_entries
            .extend(self.current.any_port_entries.keys().copied());
        for (bits, key) in stale.port_entries {
            if next.port_entries.contains_key(&(bits, key)) {
                continue;
            }
            if let Err(e) = remove_lpm(&mut self.endpoints, bits, key) {
                tracing::warn!(error = %e, map = map_names::ENDPOINTS, "removing a stale endpoint rule failed; retried at the next update");
                self.stale.port_entries.insert((bits, key));
            }
        }
        for (bits, addr) in stale.any_port_entries {
            if next.any_port_entries.contains_key(&(bits, addr)) {
                continue;
            }
            if let Err(e) = remove_lpm(&mut self.endpoints_any, bits, addr) {
                tracing::warn!(error = %e, map = map_names::ENDPOINTS_ANY_PORT, "removing a stale endpoint rule failed; retried at the next update");
                self.stale.any_port_entries.insert((bits, addr));
            }
        }
        tracing::debug!(
            port_entries = next.port_entries.len(),
            any_port_entries = next.any_port_entries.len(),
            stale = self.stale.port_entries.len() + self.stale.any_port_entries.len(),
            "endpoint maps updated"
        );
        self.current = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A map that holds `capacity` entries and says E2BIG past them, as the
    /// kernel does, and fails removals of `stuck` keys.
    #[derive(Default)]
    struct Fake {
        entries: BTreeMap<WorkloadKey, u32>,
        capacity: usize,
        stuck: BTreeSet<WorkloadKey>,
    }

    fn errno(e: i32) -> MapError {
        MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_update_elem",
            io_error: std::io::Error::from_raw_os_error(e),
        })
    }

    impl WorkloadMap for Fake {
        fn insert(&mut self, key: WorkloadKey, id: u32) -> Result<(), MapError> {
            if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
                return Err(errno(libc::E2BIG));
            }
            self.entries.insert(key, id);
            Ok(())
        }

        fn remove(&mut self, key: &WorkloadKey) -> Result<(), MapError> {
            if self.stuck.contains(key) {
                return Err(errno(libc::EPERM));
            }
            self.entries
                .remove(key)
                .map(|_| ())
                .ok_or(errno(libc::ENOENT))
        }
    }

    fn key(cgroup_id: u64, port: u16) -> WorkloadKey {
        WorkloadKey {
            cgroup_id,
            port,
            ..WorkloadKey::default()
        }
    }

    fn wl(capacity: usize) -> Workloads<Fake> {
        Workloads {
            map: Fake {
                capacity,
                ..Fake::default()
            },
            current: WorkloadEntries::new(),
            rejected: BTreeSet::new(),
            full: 0,
        }
    }

    fn entries(keys: &[(u64, u16, u32)]) -> WorkloadEntries {
        keys.iter().map(|&(c, p, id)| (key(c, p), id)).collect()
    }

    #[test]
    fn churn_replaces_stale_cgroups_and_counts_distinct_ids() {
        let mut w = wl(16);
        w.apply(entries(&[(1, 80, 0), (1, 443, 0), (2, 80, 1)]))
            .unwrap();
        assert_eq!(w.cgroups(), 2);
        // Pod 1 restarted as cgroup 3; pod 2 changed endpoint.
        let next = entries(&[(3, 80, 0), (3, 443, 0), (2, 80, 0)]);
        w.apply(next.clone()).unwrap();
        assert_eq!(w.map.entries, next);
        assert_eq!(w.current, next);
        assert_eq!((w.cgroups(), w.full), (2, 0));
    }

    #[test]
    fn a_full_map_counts_each_pair_once_and_takes_it_when_room_frees() {
        let mut w = wl(2);
        let three = entries(&[(1, 80, 0), (2, 80, 0), (3, 80, 0)]);
        w.apply(three.clone()).unwrap();
        assert_eq!((w.current.len(), w.full), (2, 1));
        // The same wish again is not a second loss.
        w.apply(three).unwrap();
        assert_eq!(w.full, 1);
        // Cgroup 1 went away: its room serves the waiting pair.
        w.apply(entries(&[(2, 80, 0), (3, 80, 0)])).unwrap();
        assert_eq!(w.map.entries, entries(&[(2, 80, 0), (3, 80, 0)]));
        assert!(w.rejected.is_empty());
        assert_eq!(w.full, 1);
    }

    #[test]
    fn a_removal_that_fails_stays_current_and_is_retried() {
        let mut w = wl(16);
        w.apply(entries(&[(1, 80, 0)])).unwrap();
        w.map.stuck.insert(key(1, 80));
        w.apply(WorkloadEntries::new()).unwrap();
        assert_eq!(w.current, entries(&[(1, 80, 0)]), "still in the kernel");
        w.map.stuck.clear();
        w.apply(WorkloadEntries::new()).unwrap();
        assert!(w.current.is_empty() && w.map.entries.is_empty());
    }
}
