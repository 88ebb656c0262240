pub mod reload;
pub mod snapshot;
