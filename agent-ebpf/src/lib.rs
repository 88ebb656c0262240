#![no_std]
// This file exists so `agent` can list this crate as a build-dependency and
// cargo rebuilds the agent when the kernel programs change.
