//! The published JSON Schema: generated from the types, never stale, and in
//! agreement with the parser.

use serde_json::Value;

use super::{
    super::{decode, schema::ContractDocument, yaml},
    *,
};

const SCHEMA_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/contract.schema.json");

/// `docs/contract.schema.json` must equal the generated schema. To
/// regenerate it: `RAMPWATCH_BLESS=1 cargo test -p agent schema_file`, or
/// `rampwatch contract schema > docs/contract.schema.json`.
#[test]
fn schema_file_is_up_to_date() {
    let generated = schema_json();
    if std::env::var_os("RAMPWATCH_BLESS").is_some() {
        std::fs::write(SCHEMA_FILE, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(SCHEMA_FILE).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/contract.schema.json is stale; regenerate it with `RAMPWATCH_BLESS=1 cargo test -p agent schema_file`"
    );
}

fn properties(schema: &Value, def: &str) -> Vec<String> {
    let node = if def.is_empty() {
        schema
    } else {
        &schema["$defs"][def]
    };
    let mut keys: Vec<String> = node["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no properties for {def}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// The parser's field lists and the schema's properties are the same, so
/// editors and `contract check` agree on what is a valid field.
#[test]
fn schema_and_parser_accept_the_same_fields() {
    let schema: Value = serde_json::from_str(&schema_json()).unwrap();
    for (def, keys) in [
        ("", decode::ROOT_KEYS),
        ("Metadata", decode::METADATA_KEYS),
        ("Spec", decode::SPEC_KEYS),
        ("Scope", decode::SCOPE_KEYS),
        ("DataClass", decode::DATA_CLASS_KEYS),
        ("Endpoint", decode::ENDPOINT_KEYS),
        ("Client", decode::CLIENT_KEYS),
        ("CredentialEntry", decode::CREDENTIAL_KEYS),
        ("JwtEntry", decode::JWT_KEYS),
        ("WorkloadSelector", decode::WORKLOAD_KEYS),
        ("Stage", decode::STAGE_KEYS),
        ("QuotaEntry", decode::QUOTA_KEYS),
        ("RevocationEntry", decode::REVOCATION_KEYS),
        ("Remediation", decode::REMEDIATION_KEYS),
        ("Window", decode::WINDOW_KEYS),
    ] {
        let mut want: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        want.sort();
        assert_eq!(properties(&schema, def), want, "definition {def:?}");
        let node = if def.is_empty() {
            &schema
        } else {
            &schema["$defs"][def]
        };
        assert_eq!(
            node["additionalProperties"],
            Value::Bool(false),
            "{def:?} is not strict"
        );
    }
}

/// YAML tree → JSON, resolving plain scalars like YAML 1.2's core schema.
fn to_json(node: &yaml::Node) -> Value {
    match &node.kind {
        yaml::Kind::Scalar { text, plain } => {
            if !plain {
                return Value::String(text.clone());
            }
            if node.is_null() {
                return Value::Null;
            }
            if let Ok(i) = text.parse::<i64>() {
                return i.into();
            }
            if let Ok(f) = text.parse::<f64>() {
                return f.into();
            }
            match text.as_str() {
                "true" => true.into(),
                "false" => false.into(),
                _ => Value::String(text.clone()),
            }
        }
        yaml::Kind::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
        yaml::Kind::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    (
                        to_json(k).as_str().unwrap_or_default().to_owned(),
                        to_json(v),
                    )
                })
                .collect(),
        ),
    }
}

/// The schema's serde types accept the example contract (which the parser
/// accepts too), and reject an unknown field like the parser does.
#[test]
fn schema_types_accept_the_example() {
    let tree = yaml::load(EXAMPLE).unwrap().unwrap();
    let json = to_json(&tree);
    let doc: ContractDocument = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(doc.spec.stages.len(), 3);
    let mut bad = json;
    bad["spec"]["endpoints"][0]["hostz"] = Value::Null;
    assert!(serde_json::from_value::<ContractDocument>(bad).is_err());
}

#[test]
fn remediation_kinds_are_the_violation_kinds() {
    let schema: Value = serde_json::from_str(&schema_json()).unwrap();
    let mut want: Vec<String> = crate::policy::Kind::ALL
        .iter()
        .map(|k| k.as_str().to_owned())
        .collect();
    want.sort();
    assert_eq!(properties(&schema, "RemediationKinds"), want);
}
