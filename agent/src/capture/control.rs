//! The maps userspace writes: configuration and the endpoint rules,
//! updated in an order that never leaves a kept rule unmatched.

use agent_common::{Config, EndpointKey, PortEntry, config_flags, map_names};
use aya::maps::{Array, MapData, lpm_trie::LpmTrie};

use super::{CaptureError, Compiled, map_err};

/// The maps userspace writes.
pub(super) struct Control {
    pub(super) config: Array<MapData, Config>,
    pub(super) endpoints: LpmTrie<MapData, EndpointKey, u32>,
    pub(super) endpoints_any: LpmTrie<MapData, [u8; 16], u32>,
    pub(super) ports: Array<MapData, PortEntry>,
    pub(super) current: Compiled,
    pub(super) cfg: Config,
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
                    .insert(&aya::maps::lpm_trie::Key::new(bits, key), id, 0)
                    .map_err(map_err(map_names::ENDPOINTS))?;
            }
        }
        for (&(bits, addr), &id) in &next.any_port_entries {
            if self.current.any_port_entries.get(&(bits, addr)) != Some(&id) {
                self.endpoints_any
                    .insert(&aya::maps::lpm_trie::Key::new(bits, addr), id, 0)
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
        for &(bits, key) in self.current.port_entries.keys() {
            if !next.port_entries.contains_key(&(bits, key)) {
                let _ = self
                    .endpoints
                    .remove(&aya::maps::lpm_trie::Key::new(bits, key));
            }
        }
        for &(bits, addr) in self.current.any_port_entries.keys() {
            if !next.any_port_entries.contains_key(&(bits, addr)) {
                let _ = self
                    .endpoints_any
                    .remove(&aya::maps::lpm_trie::Key::new(bits, addr));
            }
        }
        tracing::debug!(
            port_entries = next.port_entries.len(),
            any_port_entries = next.any_port_entries.len(),
            "endpoint maps updated"
        );
        self.current = next;
        Ok(())
    }
}
