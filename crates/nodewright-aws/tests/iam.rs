//! The IAM policy under `examples/deploy/` allows every AWS call the provider makes.

#[path = "../../nodewright-core/tests/common/mod.rs"]
mod common;

use std::path::Path;

use common::read_example as read;

/// `client.some_operation()` calls in a source file, as IAM action names.
fn called_actions(source: &str, service: &str) -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(source)).unwrap();
    let mut actions = std::collections::BTreeSet::new();
    for (i, _) in text.match_indices(".client") {
        let rest = text[i + ".client".len()..].trim_start();
        let Some(rest) = rest.strip_prefix('.') else { continue };
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if name.is_empty() || !rest[name.len()..].starts_with("()") {
            continue;
        }
        let camel: String = name
            .split('_')
            .map(|part| {
                let mut chars = part.chars();
                chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
            })
            .collect();
        actions.insert(format!("{service}:{camel}"));
    }
    actions
}

#[test]
fn the_iam_policy_allows_every_aws_call_the_code_makes() {
    let (file, text) = read("examples/deploy/iam-policy.json");
    let policy: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut allowed = std::collections::BTreeSet::new();
    for statement in policy["Statement"].as_array().unwrap() {
        match &statement["Action"] {
            serde_json::Value::String(a) => {
                allowed.insert(a.clone());
            }
            serde_json::Value::Array(list) => allowed.extend(list.iter().map(|a| a.as_str().unwrap().to_string())),
            other => panic!("{other}"),
        }
    }
    let mut called = called_actions("src/ec2.rs", "ec2");
    called.extend(called_actions("src/sqs.rs", "sqs"));
    called.extend(called_actions("src/iam.rs", "iam"));
    assert!(called.contains("iam:AddRoleToInstanceProfile"), "{called:?}");
    assert!(called.len() >= 10, "{called:?}");
    let missing: Vec<_> = called.difference(&allowed).collect();
    assert!(missing.is_empty(), "{file} does not allow {missing:?}");
}
