//! rampwatch's fuzz targets; see `targets` and `cargo xtask fuzz --list`.

pub mod targets;
