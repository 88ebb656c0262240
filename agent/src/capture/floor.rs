//! The benchmarks' cost floor: the kernel object's empty cgroup_skb program
//! (`rw_floor`), attached on its own to a cgroup, so that the capture's cost
//! can be stated as a distance from what any cgroup_skb program costs on the
//! same machine at the same moment. Not used by the agent.

use std::{fs::File, path::Path};

use agent_common::program_names;
use aya::{
    Ebpf, EbpfLoader,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType},
};

use super::{CaptureError, OBJECT, error::prog_err};

/// Holds the empty program attached (ingress and egress) until dropped.
pub struct Floor {
    _ebpf: Ebpf,
    /// Kernel id of the loaded program, for `bpf_stats` (`bpftool prog show id`).
    pub prog_id: u32,
}

impl Floor {
    /// Loads `rw_floor` and attaches it to both directions of `cgroup`.
    pub fn attach(cgroup: &Path) -> Result<Self, CaptureError> {
        if OBJECT.is_empty() {
            return Err(CaptureError::NotBuilt);
        }
        let file = File::open(cgroup).map_err(|source| CaptureError::Cgroup {
            path: cgroup.to_path_buf(),
            source,
        })?;
        let mut ebpf = EbpfLoader::new().load(OBJECT)?;
        let name = program_names::FLOOR;
        let prog: &mut CgroupSkb = ebpf
            .program_mut(name)
            .ok_or(CaptureError::MissingProgram(name))?
            .try_into()
            .map_err(prog_err(name))?;
        prog.load().map_err(prog_err(name))?;
        for kind in [CgroupSkbAttachType::Ingress, CgroupSkbAttachType::Egress] {
            prog.attach(&file, kind, CgroupAttachMode::Single)
                .map_err(prog_err(name))?;
        }
        let prog_id = prog.info().map_err(prog_err(name))?.id();
        Ok(Self {
            _ebpf: ebpf,
            prog_id,
        })
    }
}
