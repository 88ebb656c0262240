//! Contract tests: parsing errors, lookups, schema, command functions.

mod errors;
mod jwt;
mod lookups;
mod schema;
mod value_errors;
pub(crate) mod workload_endpoints;

use super::*;

pub(crate) const EXAMPLE: &str = include_str!("example.yaml");

/// The demo contract, parsed.
pub(crate) fn example() -> Contract {
    Contract::parse(EXAMPLE, "example.yaml").expect("the example contract is valid")
}

pub(crate) fn t(s: &str) -> Nanos {
    parse_rfc3339(s).expect("test time")
}
