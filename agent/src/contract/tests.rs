//! Contract parsing and lookup tests.

use super::*;

pub(crate) const EXAMPLE: &str = include_str!("../../../examples/contract.yaml");

pub(crate) fn example() -> Contract {
    Contract::parse(EXAMPLE, "examples/contract.yaml").unwrap()
}

#[test]
fn example_parses() {
    let c = example();
    assert_eq!(c.name(), "acme-payments-ramp");
    let mut out = Vec::new();
    cli::describe(&c, parse_rfc3339("2026-11-29T00:00:00Z").unwrap(), &mut out).unwrap();
    println!("{}", String::from_utf8(out).unwrap());
}
